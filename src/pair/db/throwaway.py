"""A throwaway PostgreSQL server for tests, benchmarks and demos (never for production data).

PostgreSQL refuses to run as root, so when started by root the cluster is initialised and run
as the ``postgres`` user (``runuser``) in a temp dir it owns, listening on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

PG_BIN = Path(os.environ.get("PAIR_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*cmd: str) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return list(cmd)


class PostgresServer:
    """A temporary PostgreSQL cluster, 127.0.0.1 only, fsync off (data is disposable)."""

    def __init__(self, prefix: str = "pair-pg-") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.datadir = self.dir / "data"

    def start(self, *extra_options: str) -> PostgresServer:
        initdb = [
            str(PG_BIN / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
        subprocess.run(_as_postgres(*initdb), check=True, capture_output=True, timeout=120)
        opts = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.dir}",
                "-c fsync=off",
                "-c max_connections=200",
                *extra_options,
            ]
        )
        ctl = [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            opts,
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "60",
            "start",
        ]
        subprocess.run(_as_postgres(*ctl), check=True, capture_output=True, timeout=90)
        return self

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t_") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = prefix + uuid.uuid4().hex[:12]
        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    @property
    def pid(self) -> int:
        """The postmaster's pid (its children are the backends serving connections)."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def stop(self) -> None:
        ctl = [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "stop"]
        subprocess.run(_as_postgres(*ctl), capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
