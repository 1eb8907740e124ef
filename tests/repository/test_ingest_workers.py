"""Ingest stage one in worker processes (what `pair serve` uses): same outcomes as in-process,
consistent pseudonyms when two workers meet a new patient at once, a dead worker costs one
batch (answered as failed, nothing half-stored) and the pool recovers."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.core.node import Node
from pair.deid.models import PrivatePatientIdentity
from pair.repository.ingest import Outcome, Payload, ingest_batch
from pair.repository.models import Instance, Patient, QuarantineItem, Series, Study
from pair.repository.workers import (
    IngestWorkers,
    attach_workers,
    default_worker_count,
)
from tests.conftest import LiveNode
from tests.factories import ct_instance, to_bytes, write_series


@pytest.fixture
def workers(node: Node) -> Iterator[IngestWorkers]:
    pool = IngestWorkers(node.settings, 2)
    pool.warm_up()
    attach_workers(node, pool)
    yield pool
    attach_workers(node, None)
    pool.close()


def _actor(facility_id: int) -> Actor:
    return Actor(None, "test", facility_id, "data-manager", "pytest")


def _batch(patient: str, n: int) -> list[bytes]:
    study, series = generate_uid(), generate_uid()
    person = {"PatientName": f"{patient}^ANNA", "PatientID": f"MRN-{patient}"}
    return [
        to_bytes(ct_instance(study_uid=study, series_uid=series, index=i, patient=person))
        for i in range(1, n + 1)
    ]


def test_workers_store_index_and_deduplicate(node: Node, workers: IngestWorkers) -> None:
    with node.db.session() as s:
        facility_id = accounts.create_facility(s, "Worker Hospital", "WORK").id
    good = _batch("NEWPATIENT", 6)  # one new patient split over both workers at once
    leaky = ct_instance(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        index=9,
        patient={"PatientName": "LEAKY^JOHANNA", "PatientID": "MRN-LEAKY"},
    )
    leaky.BodyPartExamined = "JOHANNA"  # the given name in a retained element: quarantined
    payloads = [Payload(data=d) for d in good]
    payloads += [Payload(data=b"not dicom at all"), Payload(data=to_bytes(leaky))]
    results = ingest_batch(node, facility_id, payloads, "test", _actor(facility_id))

    outcomes = [r.outcome for r in results]
    assert outcomes == [Outcome.STORED] * 6 + [Outcome.REJECTED, Outcome.QUARANTINED]
    assert results[6].reason_code == "not_dicom"
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(PrivatePatientIdentity)) == 2
        assert s.scalar(select(func.count()).select_from(Patient)) == 1
        study = s.scalars(select(Study)).one()
        assert (study.num_instances, study.num_series, study.modalities) == (6, 1, "CT")
        assert s.scalars(select(Series)).one().num_instances == 6
        assert s.scalar(select(func.count()).select_from(Instance)) == 6
        assert s.scalar(select(func.count()).select_from(QuarantineItem)) == 1
        paths = list(s.scalars(select(Instance.storage_path)))
    store = node.settings.storage_dir
    assert all((store / p).is_file() for p in paths)

    again = ingest_batch(node, facility_id, payloads[:6], "test", _actor(facility_id))
    assert [r.outcome for r in again] == [Outcome.DUPLICATE] * 6
    assert [r.sop_instance_uid for r in again] == [r.sop_instance_uid for r in results[:6]]
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 6


def test_dead_worker_fails_one_batch_then_pool_recovers(node: Node, workers: IngestWorkers) -> None:
    with node.db.session() as s:
        facility_id = accounts.create_facility(s, "Worker Hospital", "WORK").id
    for pid in workers.warm_up():
        os.kill(pid, signal.SIGKILL)
    batch = [Payload(data=d) for d in _batch("CRASH", 2)]
    failed = ingest_batch(node, facility_id, batch, "test", _actor(facility_id))
    assert [r.outcome for r in failed] == [Outcome.REJECTED] * 2
    assert all(r.reason_code == "processing_failed" for r in failed)
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0
    retried = ingest_batch(node, facility_id, batch, "test", _actor(facility_id))
    assert [r.outcome for r in retried] == [Outcome.STORED] * 2


def test_default_worker_count() -> None:
    assert [default_worker_count(n) for n in (1, 2, 3, 4, 8, 64)] == [0, 0, 2, 3, 4, 4]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.integration
def test_serve_with_workers_stores_over_both_doors(tmp_path: Path, database_url: str) -> None:
    """`pair serve` with PAIR_INGEST_WORKERS=2: dcmtk storescu and dicomweb-client STOW-RS
    go through the workers; stopping the server stops them."""
    live = LiveNode(tmp_path / "live", database_url)
    live.env_overrides["PAIR_INGEST_WORKERS"] = "2"
    live.provision()
    live.start()
    try:
        assert live.proc is not None
        workers = [
            pid
            for pid in _children(live.proc.pid)
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) == 2
        files = write_series(tmp_path / "dimse", n=3)
        scu = ["storescu", "-aet", live.peer_ae, "-aec", live.ae_title, "127.0.0.1"]
        sent = subprocess.run(
            [*scu, str(live.dicom_port), *map(str, files)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        web = DICOMwebClient(url=live.base_url + "/dicomweb", headers=live.headers())
        stow = [pydicom.dcmread(p) for p in write_series(tmp_path / "stow", n=3)]
        answer = web.store_instances(stow)
        assert len(answer.ReferencedSOPSequence) == 3
        assert len(web.search_for_instances()) == 6
        assert len(web.search_for_studies()) == 2
    finally:
        live.stop()
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
