"""An acknowledged write survives kill -9; a crash leaves no half file and no orphan row."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from pair.core.config import get_settings
from pair.core.node import open_node
from pair.repository.models import Instance
from tests.conftest import LiveNode
from tests.factories import ct_instance, to_bytes

pytestmark = pytest.mark.integration


def test_kill9_during_ingest_keeps_acknowledged_instances(live: LiveNode) -> None:
    url = live.base_url + "/dicomweb/studies"
    ctype = 'multipart/related; type="application/dicom"; boundary=xx'
    acknowledged: list[str] = []
    stop = threading.Event()
    study, series = generate_uid(), generate_uid()

    def sender() -> None:
        i = 0
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                i += 1
                ds = ct_instance(study_uid=study, series_uid=series, index=i, size=128)
                body = (
                    b"--xx\r\nContent-Type: application/dicom\r\n\r\n"
                    + to_bytes(ds)
                    + b"\r\n--xx--\r\n"
                )
                try:
                    r = http.post(
                        url, content=body, headers={**live.headers(), "Content-Type": ctype}
                    )
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acknowledged.append(str(ds.InstanceNumber))

    threads = [threading.Thread(target=sender) for _ in range(3)]
    _kill9_once_acknowledged(live, threads, acknowledged, stop=stop)
    rows = _restart_and_check(live, acknowledged)
    # the server answers for every acknowledged instance
    found = httpx.get(live.base_url + "/dicomweb/instances", headers=live.headers()).json()
    assert len(found) == len(rows)


def test_kill9_during_concurrent_c_store_keeps_acknowledged_instances(live: LiveNode) -> None:
    """Three associations storing at once (their instances committed in groups): every
    C-STORE answered with success before the kill -9 is there after the restart."""
    acknowledged: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    study = generate_uid()

    def sender(worker: int) -> None:
        ae = AE(ae_title=live.peer_ae)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", live.dicom_port, ae_title=live.ae_title)
        if not assoc.is_established:
            return
        series = generate_uid()
        for i in range(1, 10_000):
            number = worker * 10_000 + i  # InstanceNumber: unique across the senders
            ds = ct_instance(study_uid=study, series_uid=series, index=number, size=64)
            try:
                status = assoc.send_c_store(ds)
            except Exception:  # the server is gone mid-request
                return
            if not status or "Status" not in status:  # no answer: the server is gone
                return
            with lock:
                if status.Status == 0x0000:
                    acknowledged.append(str(number))
                else:
                    refused.append(int(status.Status))
                    return
        assoc.release()

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(3)]
    _kill9_once_acknowledged(live, threads, acknowledged)
    assert refused == []
    _restart_and_check(live, acknowledged)


def _kill9_once_acknowledged(
    live: LiveNode,
    senders: list[threading.Thread],
    acknowledged: list[str],
    *,
    stop: threading.Event | None = None,
    at_least: int = 15,
) -> None:
    """Start the senders, kill -9 the server once ``at_least`` writes were acknowledged, set
    ``stop`` and wait for the senders to return (each also returns when the server is gone)."""
    for t in senders:
        t.start()
    deadline = time.time() + 30
    while len(acknowledged) < at_least and time.time() < deadline:
        time.sleep(0.05)
    live.kill9()
    if stop is not None:
        stop.set()
    return_deadline = time.time() + 60
    for t in senders:
        t.join(max(0.0, return_deadline - time.time()))
    assert len(acknowledged) >= at_least


def _restart_and_check(live: LiveNode, acknowledged: list[str]) -> list[Instance]:
    """Restart (start-up reconciliation runs), then: every acknowledged instance is indexed,
    every file has its row and size and every row its file, and no temp file is left."""
    live.start()
    settings = get_settings(live.data_dir, database_url=live.database_url)
    node = open_node(settings=settings)
    try:
        with node.db.session() as s:
            rows = list(s.scalars(select(Instance)))
    finally:
        node.close()
    assert set(acknowledged) <= {str(r.instance_number) for r in rows}
    files = {
        str(p.relative_to(settings.storage_dir)) for p in settings.storage_dir.glob("??/??/*.dcm")
    }
    assert files == {r.storage_path for r in rows}, "orphan file or row after crash"
    assert not list(settings.tmp_dir.glob("*.part"))
    for r in rows:
        assert (settings.storage_dir / r.storage_path).stat().st_size == r.size
    return rows
