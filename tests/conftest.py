"""Shared fixtures. Database-backed tests run on SQLite and on a real PostgreSQL server.

The PostgreSQL server is started once per test session as the ``postgres`` user in a temporary
directory it owns, listening on 127.0.0.1 only, and stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.db.throwaway import PostgresServer, free_port

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from pydicom import Dataset
    from pynetdicom.association import Association
    from sqlalchemy.orm import Session

    from pair.repository.models import Patient

# Real third-party images committed with the tests (see tests/data/README.md)
TEST_DATA = Path(__file__).resolve().parent / "data"


def admin_test_client(node: Node) -> tuple[TestClient, dict[str, dict[str, str]]]:
    """An in-process client of ``node`` and Authorization headers for an admin ("admin") and a
    data manager ("dm") of Hospital A and an admin of Hospital B ("adminb")."""
    from fastapi.testclient import TestClient

    from pair.accounts import service
    from pair.web.app import create_app

    users: Sequence[tuple[str, int, str]]
    with node.db.session() as s:
        fa = service.create_facility(s, "Hospital A", "HOSPA")
        fb = service.create_facility(s, "Hospital B", "HOSPB")
        users = [("admin", 0, "admin"), ("dm", 0, "data-manager"), ("adminb", 1, "admin")]
        tokens = {
            name: service.create_token(s, service.create_user(s, (fa, fb)[f], name, role))[1]
            for name, f, role in users
        }
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    return TestClient(create_app(node)), headers


def c_find(assoc: Association, **keys: Any) -> tuple[int, list[Dataset]]:
    """Send one Study Root C-FIND; return the final status and the pending identifiers."""
    from pydicom import Dataset
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind,
    )

    q = Dataset()
    for keyword, value in keys.items():
        setattr(q, keyword, value)
    found, final = [], -1
    for status, ident in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind):
        assert status is not None, "no response from the SCP"
        if status.Status in (0xFF00, 0xFF01):
            found.append(ident)
        else:
            final = int(status.Status)
    return final, found


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    time.sleep(0.2)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pair.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
def node(tmp_path: Path, database_url: str) -> Iterator[Node]:
    """A node with its own data dir on each database backend."""
    settings = get_settings(tmp_path / "node", database_url=database_url, site_id="TEST")
    n = open_node(settings=settings)
    yield n
    n.close()


@pytest.fixture
def sqlite_node(tmp_path: Path) -> Iterator[Node]:
    """A node on SQLite only, for tests whose subject is not the database."""
    n = open_node(tmp_path / "node")
    yield n
    n.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The vendored real images (tests/data): chest PNGs + labels.csv, and a few DICOM files."""
    return TEST_DATA


# ---- live node: a real `pair serve` process (HTTP + DICOM) -----------------------------------


class LiveNode:
    """A `pair serve` subprocess with two facilities, users of each role and a DICOM peer."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = free_port()
        self.dicom_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ae_title = "PAIR"
        self.peer_ae = "TESTSCU"
        self.tokens: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"
        self.env_overrides: dict[str, str] = {}
        self.start_timeout_s = 60.0  # tests that start several processes may allow more

    @property
    def env(self) -> dict[str, str]:
        src = str(Path(__file__).resolve().parents[1] / "src")
        return {
            **os.environ,
            "PAIR_DATABASE_URL": self.database_url,
            "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **self.env_overrides,
        }

    @contextmanager
    def direct_session(self) -> Iterator[tuple[Session, Patient]]:
        """Write index rows straight into this node's database (facility HOSPA, one bulk
        patient): for tests that need more matches than sending files would give quickly."""
        from sqlalchemy import select

        from pair.accounts.models import Facility
        from pair.repository.models import Patient

        node = open_node(settings=get_settings(self.data_dir, database_url=self.database_url))
        try:
            with node.db.session() as s:
                facility = s.scalar(select(Facility).where(Facility.code == "HOSPA"))
                assert facility is not None
                patient = Patient(facility_id=facility.id, pseudonym="HOSPA-BULK")
                s.add(patient)
                s.flush()
                yield s, patient
        finally:
            node.close()

    def provision(self) -> None:
        from pair.accounts import service

        settings = get_settings(self.data_dir, database_url=self.database_url)
        node = open_node(settings=settings)
        with node.db.session() as s:
            fa = service.create_facility(s, "Hospital A", "HOSPA")
            fb = service.create_facility(s, "Hospital B", "HOSPB")
            users = {
                "admin_a": (fa, "admin"),
                "dm_a": (fa, "data-manager"),
                "rad_a": (fa, "radiologist"),
                "eval_a": (fa, "evaluator"),
                "admin_b": (fb, "admin"),
                "rad_b": (fb, "radiologist"),
            }
            for name, (fac, role) in users.items():
                user = service.create_user(s, fac, name, role, "password-" + name)
                self.tokens[name] = service.create_token(s, user)[1]
            service.add_ae_title(s, fa, self.peer_ae)
        node.close()

    def start(self) -> None:
        import sys

        import httpx

        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pair",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--dicom-port",
                str(self.dicom_port),
                "--ae-title",
                self.ae_title,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + self.start_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log_path.read_text()[-3000:])
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start:\n" + self.log_path.read_text()[-3000:])

    def headers(self, user: str = "dm_a") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def live(tmp_path: Path, database_url: str) -> Iterator[LiveNode]:
    server = LiveNode(tmp_path / "live", database_url)
    server.provision()
    server.start()
    yield server
    server.stop()
