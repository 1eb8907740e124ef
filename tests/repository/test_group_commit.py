"""Group commit of C-STORE: concurrent pynetdicom associations into a real DICOM listener on
SQLite and PostgreSQL. Instances that arrive while an index transaction runs are indexed
together, each association gets its own status after the commit, audit rows name each
association's calling AE, and a member that fails (its facility over quota) fails alone."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import Engine, event, func, select

from pair.accounts import service
from pair.audit.feedlog import FeedQuota
from pair.audit.models import AuditEvent
from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.db.throwaway import free_port
from pair.repository.dimse import DimseServer, start_dimse_server
from pair.repository.models import Instance, Series, Study
from tests.factories import ct_instance

pytestmark = pytest.mark.integration

# calling AE title -> facility code
PEERS = {"GC_A1": "HOSPA", "GC_A2": "HOSPA", "GC_A3": "HOSPA", "GC_B1": "HOSPB", "GC_B2": "HOSPB"}
_INSERT_INSTANCES = re.compile(r"^\s*INSERT INTO instance \(")
WAIT_S = 60.0  # a bound on waiting for a state, never a measured duration


@dataclass
class Listener:
    node: Node
    server: DimseServer
    port: int
    facility_ids: dict[str, int]


@pytest.fixture
def start_listener(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(**settings: object) -> Listener:
        node = open_node(
            settings=get_settings(
                tmp_path / f"node{len(started)}", database_url=database_url, **settings
            )
        )
        with node.db.session() as s:
            facilities = {
                code: service.create_facility(s, f"Hospital {code[-1]}", code)
                for code in ("HOSPA", "HOSPB")
            }
            for ae_title, code in PEERS.items():
                service.add_ae_title(s, facilities[code], ae_title)
            ids = {code: f.id for code, f in facilities.items()}
        server = start_dimse_server(node, "127.0.0.1", free_port(), "PAIR")
        listener = Listener(node, server, int(server.server.server_address[1]), ids)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.server.shutdown(grace_s=0.1)
        listener.node.close()


class Gate:
    """Holds the first stage-two transaction at its first statement (the stored-digests look-up,
    before it writes or locks anything) until released, and counts the executemany inserts of
    instance rows: one per facility per index transaction."""

    def __init__(self, engine: Engine, armed: bool = True) -> None:
        self.engine = engine
        self.armed = armed
        self.entered = threading.Event()
        self.release = threading.Event()
        self.instance_inserts = 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *args: Any) -> None:
        statement: str = args[2]
        hold = False
        with self._lock:
            if _INSERT_INSTANCES.match(statement):
                self.instance_inserts += 1
            if (
                self.armed
                and statement.lstrip().startswith("SELECT")
                and ("instance.sha256" in statement)
            ):
                self.armed, hold = False, True
        if hold:
            self.entered.set()
            assert self.release.wait(WAIT_S), "the test did not release the gate"

    def close(self) -> None:
        self.release.set()
        event.remove(self.engine, "before_cursor_execute", self._on_execute)


def instances(ae_title: str, n: int) -> list[Dataset]:
    """``n`` CT slices of one new study of a patient of its own per calling AE."""
    study, series = generate_uid(), generate_uid()
    patient = {"PatientID": f"MRN-{ae_title}", "PatientName": f"DOE^{ae_title}"}
    return [
        ct_instance(study_uid=study, series_uid=series, index=i, size=8, patient=patient)
        for i in range(1, n + 1)
    ]


def send(port: int, ae_title: str, datasets: list[Dataset]) -> list[tuple[int, str]]:
    """One association from ``ae_title``: (status, error comment) of each C-STORE."""
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="PAIR")
    assert assoc.is_established
    answers = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status is not None and "Status" in status, "no C-STORE response"
            answers.append((int(status.Status), str(status.get("ErrorComment", ""))))
    finally:
        assoc.release()
    return answers


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def held_behind_first(
    listener: Listener, first: tuple[str, list[Dataset]], rest: dict[str, list[Dataset]]
) -> dict[str, list[tuple[int, str]]]:
    """Send ``first``, hold its index transaction until every association of ``rest`` has its
    instance queued behind it, then let it go; returns each association's answers."""
    committer = listener.server.committer
    assert committer is not None
    gate = Gate(listener.node.db.engine)
    try:
        with ThreadPoolExecutor(len(rest) + 1) as pool:
            futures: dict[str, Future[list[tuple[int, str]]]] = {
                first[0]: pool.submit(send, listener.port, *first)
            }
            assert gate.entered.wait(WAIT_S), "the first C-STORE never reached stage two"
            for ae_title, datasets in rest.items():
                futures[ae_title] = pool.submit(send, listener.port, ae_title, datasets)
            wait_for(lambda: committer.waiting == len(rest), "all queued behind the first")
            gate.release.set()
            return {ae: f.result(WAIT_S) for ae, f in futures.items()}
    finally:
        gate.close()


def stored_files(node: Node) -> set[str]:
    root = node.settings.storage_dir
    return {str(p.relative_to(root)) for p in root.glob("??/??/*.dcm")}


def test_concurrent_associations_are_committed_together(
    start_listener: Callable[..., Listener],
) -> None:
    listener = start_listener()
    committer = listener.server.committer
    assert committer is not None
    node = listener.node
    first, *others = PEERS
    sent = {ae: instances(ae, 1) for ae in PEERS}
    gate = Gate(node.db.engine, armed=False)
    try:
        answers = held_behind_first(listener, (first, sent[first]), {a: sent[a] for a in others})
    finally:
        gate.close()
    assert answers == {ae: [(0x0000, "")] for ae in PEERS}
    # the first alone, then the four queued behind it in one transaction
    assert (committer.transactions, committer.largest, committer.members) == (2, 4, 5)
    # counted in the database traffic too: one instance insert per facility per transaction
    # (the second transaction holds both facilities), against one per instance without grouping
    assert gate.instance_inserts == 3 < len(PEERS)

    # then all five at once, five instances each, without holding anything
    more = {ae: instances(ae, 5) for ae in PEERS}
    with ThreadPoolExecutor(len(PEERS)) as pool:
        futures = {ae: pool.submit(send, listener.port, ae, ds) for ae, ds in more.items()}
        answers = {ae: f.result(WAIT_S) for ae, f in futures.items()}
    assert all(status == 0x0000 for a in answers.values() for status, _ in a), answers
    assert committer.members == 5 + 25
    assert committer.fallbacks == 0

    with node.db.session() as s:
        per_facility = dict(
            s.execute(
                select(Study.facility_id, func.count(Instance.id))
                .join(Series, Series.id == Instance.series_pk)
                .join(Study, Study.id == Series.study_pk)
                .group_by(Study.facility_id)
            )
            .tuples()
            .all()
        )
        uids = list(s.scalars(select(Instance.sop_instance_uid)))
        audits = s.execute(
            select(AuditEvent.user_name, AuditEvent.facility_id, AuditEvent.detail).where(
                AuditEvent.action == "instance.store"
            )
        ).all()
    ids = listener.facility_ids
    assert per_facility == {ids["HOSPA"]: 3 * 6, ids["HOSPB"]: 2 * 6}
    assert len(uids) == len(set(uids)) == 30  # every instance indexed once
    # one audit row per C-STORE, with its own association's calling AE and facility
    for ae_title, code in PEERS.items():
        mine = [(f, d) for name, f, d in audits if name == f"AE:{ae_title}"]
        assert len(mine) == 6, ae_title
        assert all(f == ids[code] and d == {"outcomes": {"stored": 1}} for f, d in mine)
    assert len(audits) == 30
    assert stored_files(node) == _storage_paths(node), "a file without a row, or a row without"


def _storage_paths(node: Node) -> set[str]:
    with node.db.session() as s:
        return set(s.scalars(select(Instance.storage_path)))


def test_a_member_over_its_quota_fails_alone(start_listener: Callable[..., Listener]) -> None:
    listener = start_listener()
    committer = listener.server.committer
    assert committer is not None
    node = listener.node
    with node.db.session() as s:  # Hospital B may store no byte; Hospital A has no limit
        s.add(FeedQuota(facility_id=listener.facility_ids["HOSPB"], max_instances=0, max_bytes=1))
    sent = {ae: instances(ae, 1) for ae in ("GC_A1", "GC_A2", "GC_B1")}
    answers = held_behind_first(
        listener, ("GC_A1", sent["GC_A1"]), {"GC_A2": sent["GC_A2"], "GC_B1": sent["GC_B1"]}
    )
    assert answers["GC_A1"] == [(0x0000, "")]
    assert answers["GC_A2"] == [(0x0000, "")]  # in the failed group, committed again alone
    ((status, comment),) = answers["GC_B1"]
    assert status == 0xC001 and comment.startswith("Storage quota of this facility exceeded")
    assert committer.largest == 2 and committer.fallbacks == 1
    assert committer.transactions == 1 + 1 + 2  # the first, the failed group, each alone
    with node.db.session() as s:
        rows = s.execute(select(Instance.sop_instance_uid, Instance.storage_path)).all()
        b_audits = s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.user_name == "AE:GC_B1")
        )
    assert len(rows) == 2
    assert b_audits == 0  # nothing of the refused instance was committed
    # the refused instance's file is gone: every file has its row, every row its file
    assert stored_files(node) == {path for _, path in rows}
    assert not list(node.settings.tmp_dir.glob("*.part"))


def test_group_commit_off_commits_each_instance_alone(
    start_listener: Callable[..., Listener],
) -> None:
    listener = start_listener(dicom_group_commit=False)
    assert listener.server.committer is None
    gate = Gate(listener.node.db.engine, armed=False)
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [
                pool.submit(send, listener.port, ae, instances(ae, 3))
                for ae in ("GC_A1", "GC_A2", "GC_B1")
            ]
            answers = [f.result(WAIT_S) for f in futures]
    finally:
        gate.close()
    assert answers == [[(0x0000, "")] * 3] * 3
    assert gate.instance_inserts == 9  # one index transaction per instance
    assert len(_storage_paths(listener.node)) == 9
