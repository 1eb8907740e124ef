"""Concurrent STOW-RS and C-STORE into the same studies on PostgreSQL: no deadlock reaches a
client (rows are locked in one global order; a deadlock or serialization failure of the
database commit is retried without parsing and de-identifying again), nothing is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from pair.db.throwaway import PostgresServer
from tests.conftest import LiveNode
from tests.factories import ct_instance, to_bytes

pytestmark = pytest.mark.integration

CTYPE = 'multipart/related; type="application/dicom"; boundary=cc'
DURATION_S = 15.0


@pytest.fixture
def pg_live(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[LiveNode]:
    server = LiveNode(tmp_path / "live", postgres_server.create_database())
    server.provision()
    server.start()
    yield server
    server.stop()


def test_concurrent_stow_and_c_store_into_one_study(pg_live: LiveNode) -> None:
    studies = [generate_uid(), generate_uid()]
    fixed = [generate_uid(), generate_uid()]  # one long-lived series in each study
    acknowledged: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def stow(worker: int) -> None:
        # each request: a slice of one study's known series and a new series of the other
        # study, the two studies in opposite roles on odd and even workers
        a, b = (0, 1) if worker % 2 else (1, 0)
        i = 0
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                i += 1
                datasets = [
                    ct_instance(study_uid=studies[a], series_uid=fixed[a], index=i, size=8),
                    ct_instance(study_uid=studies[b], series_uid=generate_uid(), index=i, size=8),
                ]
                body = b"".join(
                    b"--cc\r\nContent-Type: application/dicom\r\n\r\n" + to_bytes(d) + b"\r\n"
                    for d in datasets
                )
                r = http.post(
                    pg_live.base_url + "/dicomweb/studies",
                    content=body + b"--cc--\r\n",
                    headers={**pg_live.headers(), "Content-Type": CTYPE},
                )
                with lock:
                    if r.status_code == 200:
                        acknowledged.extend(str(d.SOPInstanceUID) for d in datasets)
                    else:
                        errors.append(f"STOW {r.status_code}: {r.text[:200]}")

    def c_store(worker: int) -> None:
        ae = AE(ae_title=pg_live.peer_ae)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", pg_live.dicom_port, ae_title=pg_live.ae_title)
        assert assoc.is_established
        i = 0
        try:
            while not stop.is_set():
                i += 1
                study = worker % 2
                series = fixed[study] if i % 2 else generate_uid()
                ds = ct_instance(study_uid=studies[study], series_uid=series, index=i, size=8)
                status = assoc.send_c_store(ds)
                with lock:
                    if status and status.Status == 0x0000:
                        acknowledged.append(str(ds.SOPInstanceUID))
                    else:
                        errors.append(f"C-STORE {status.Status if status else 'no answer'}")
        finally:
            assoc.release()

    threads = [threading.Thread(target=stow, args=(n,)) for n in range(6)]
    threads += [threading.Thread(target=c_store, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    time.sleep(DURATION_S)
    stop.set()
    for t in threads:
        t.join(120)
    log = pg_live.log_path.read_text(errors="replace")
    assert errors == [], f"{len(errors)} failed of {len(errors) + len(acknowledged)}: {errors[:3]}"
    assert "deadlock" not in log.lower()
    assert len(acknowledged) >= 20
    # every acknowledged instance is there: match the original SOP Instance UIDs through QIDO
    r = httpx.get(
        pg_live.base_url + "/dicomweb/instances",
        params={"limit": "100000"},
        headers=pg_live.headers(),
        timeout=60,
    )
    assert r.status_code == 200
    assert len(r.json()) == len(acknowledged)
    counts = httpx.get(
        pg_live.base_url + "/dicomweb/studies", headers=pg_live.headers(), timeout=60
    ).json()
    assert sum(s["00201208"]["Value"][0] for s in counts) == len(acknowledged)
