"""Reliability under concurrent load: parallel STOW-RS and C-STORE clients for a bounded time,
one ``kill -9`` of the node in the middle, a restart, then a check that nothing acknowledged
was lost. Not a timed test: it measures and prints.

Per database (SQLite, PostgreSQL) a fresh ``pair serve`` takes ``--stow`` HTTP clients (batches
of ``--batch`` instances spanning two studies) and ``--cstore`` DICOM associations, all into
the same three studies (a long-lived series per study and, one time in four, a new one: the
rows concurrent ingest contends for). At ``--kill-at`` of the run the node is killed with
SIGKILL and started again; clients count what fails while it is down as "unreachable".

Each instance carries a unique InstanceNumber (kept by de-identification); after the run every
acknowledged one must be readable from the stored files (WADO-RS study metadata), else it is
"lost". Columns: acknowledged instances, errors (a failure answered by a running node: 4xx/5xx,
a DIMSE failure status), unreachable (refused or cut while the node was down), lost (must be
0), deadlocks (PostgreSQL deadlocks in the server log: answered as errors / retried by the
node), throughput (acknowledged instances per second of the run).

Run:  PYTHONPATH=src python benchmarks/reliability.py --duration 30 --stow 8 --cstore 2
"""

from __future__ import annotations

import argparse
import itertools
import random
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from common import (
    PEER_AE,
    PairNode,
    command_line,
    database_url,
    machine_description,
    postgres,
    print_table,
    workdir,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

STUDIES = 3
HEADERS = [
    "database",
    "acknowledged",
    "errors",
    "unreachable",
    "lost",
    "deadlocks (errors / retried)",
    "throughput (inst/s)",
]


def instance(study: str, series: str, number: int, rng: np.random.Generator) -> Dataset:
    """A small CT image (64x64 int16) with identifying attributes de-identification handles."""
    ds = Dataset()
    uid = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = "RELIABLE^ROBIN", "MRN7700" + study[-3:]
    ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
    ds.AccessionNumber = "ACC" + study[-6:]
    ds.StudyDate = ds.SeriesDate = "20200415"
    ds.StudyTime, ds.StudyID = "101500", "1"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, number
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 1
    ds.PixelData = rng.integers(-1000, 1000, (64, 64), dtype=np.int16).tobytes()
    return ds


def part10(ds: Dataset) -> bytes:
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@dataclass
class Tally:
    acknowledged: set[int] = field(default_factory=set)
    errors: int = 0
    unreachable: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, numbers: Sequence[int], outcome: str) -> None:
        with self.lock:
            if outcome == "ok":
                self.acknowledged.update(numbers)
            elif outcome == "error":
                self.errors += len(numbers)
            else:
                self.unreachable += len(numbers)


class Load:
    """STOW-RS and C-STORE clients sending into the same studies until ``stop`` is set."""

    def __init__(self, node: PairNode, batch: int, seed: int) -> None:
        self.node = node
        self.batch = batch
        self.studies = [generate_uid() for _ in range(STUDIES)]
        self.series = [generate_uid() for _ in range(STUDIES)]  # one long-lived per study
        self.numbers = itertools.count(1)
        self.numbers_lock = threading.Lock()
        self.tally = Tally()
        self.stop = threading.Event()
        self.seed = seed

    def _next(self, n: int) -> list[int]:
        with self.numbers_lock:
            return [next(self.numbers) for _ in range(n)]

    def _datasets(self, rng: random.Random, nprng: np.random.Generator, n: int) -> list[Dataset]:
        """``n`` instances over two of the studies (one when ``n`` is 1), each part in the
        study's long-lived series or, one time in four, in a new series."""
        out: list[Dataset] = []
        numbers = self._next(n)
        ks = rng.sample(range(STUDIES), 2 if n > 1 else 1)
        for j, k in enumerate(ks):
            series = generate_uid() if rng.random() < 0.25 else self.series[k]
            part = numbers[j * n // len(ks) : (j + 1) * n // len(ks)]
            out += [instance(self.studies[k], series, i, nprng) for i in part]
        return out

    def stow_client(self, worker: int) -> None:
        rng, nprng = random.Random(self.seed + worker), np.random.default_rng(worker)
        ctype = 'multipart/related; type="application/dicom"; boundary=rel'
        with httpx.Client(timeout=120) as http:
            while not self.stop.is_set():
                datasets = self._datasets(rng, nprng, self.batch)
                body = b"".join(
                    b"--rel\r\nContent-Type: application/dicom\r\n\r\n" + part10(d) + b"\r\n"
                    for d in datasets
                )
                numbers = [int(d.InstanceNumber) for d in datasets]
                try:
                    r = http.post(
                        self.node.dicomweb + "/studies",
                        content=body + b"--rel--\r\n",
                        headers={**self.node.headers, "Content-Type": ctype},
                    )
                except httpx.HTTPError:
                    self.tally.add(numbers, "unreachable")
                    time.sleep(0.5)
                    continue
                self.tally.add(numbers, "ok" if r.status_code == 200 else "error")

    def cstore_client(self, worker: int) -> None:
        from pynetdicom import AE

        rng, nprng = random.Random(self.seed + 1000 + worker), np.random.default_rng(1000 + worker)
        ae = AE(ae_title=PEER_AE)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = None
        while not self.stop.is_set():
            if assoc is None or not assoc.is_established:
                assoc = ae.associate("127.0.0.1", self.node.dicom_port, ae_title=self.node.ae_title)
                if not assoc.is_established:
                    time.sleep(0.5)
                    continue
            ds = self._datasets(rng, nprng, 1)[0]
            try:
                status = assoc.send_c_store(ds)
            except Exception:
                status = None
            if not status or "Status" not in status:
                self.tally.add([int(ds.InstanceNumber)], "unreachable")
                assoc.abort()
                assoc = None
                continue
            ok = status.Status == 0x0000
            self.tally.add([int(ds.InstanceNumber)], "ok" if ok else "error")
        if assoc is not None and assoc.is_established:
            assoc.release()

    def stored_numbers(self) -> set[int]:
        """InstanceNumbers readable from the stored files (WADO-RS metadata of each study)."""
        found: set[int] = set()
        with httpx.Client(timeout=300, headers=self.node.headers) as http:
            studies = http.get(self.node.dicomweb + "/studies", params={"limit": "1000"})
            if studies.status_code == 204:
                return found
            studies.raise_for_status()
            for study in studies.json():
                uid = study["0020000D"]["Value"][0]
                meta = http.get(f"{self.node.dicomweb}/studies/{uid}/metadata")
                meta.raise_for_status()
                found.update(int(m["00200013"]["Value"][0]) for m in meta.json())
        return found


def run_backend(
    backend: str,
    url: str,
    folder: Path,
    *,
    duration: float,
    stow: int,
    cstore: int,
    batch: int,
    kill_at: float,
    seed: int,
) -> list[str]:
    """One run on one database; returns its table row."""
    node = PairNode(folder, url)
    node.start()
    load = Load(node, batch, seed)
    threads = [threading.Thread(target=load.stow_client, args=(n,)) for n in range(stow)]
    threads += [threading.Thread(target=load.cstore_client, args=(n,)) for n in range(cstore)]
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        time.sleep(duration * kill_at)
        assert node.proc is not None
        node.proc.kill()  # SIGKILL: no shutdown, no flush
        node.proc.wait()
        node.start()  # start-up reconciliation runs here
        time.sleep(max(0.0, duration - (time.monotonic() - t0)))
    finally:
        load.stop.set()
        for t in threads:
            t.join(300)
    elapsed = time.monotonic() - t0
    try:
        stored = load.stored_numbers()
    finally:
        node.stop()
    log = node.log.read_text(errors="replace")
    deadlock_errors = log.count("DeadlockDetected")
    deadlocks_retried = log.count("(40P01); retrying")
    tally = load.tally
    lost = len(tally.acknowledged - stored)
    return [
        backend,
        str(len(tally.acknowledged)),
        str(tally.errors),
        str(tally.unreachable),
        str(lost),
        f"{deadlock_errors} / {deadlocks_retried}",
        f"{len(tally.acknowledged) / elapsed:.1f}",
    ]


def main(argv: Sequence[str] | None = None) -> list[list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load per database")
    p.add_argument("--stow", type=int, default=8, help="parallel STOW-RS clients")
    p.add_argument("--cstore", type=int, default=2, help="parallel C-STORE associations")
    p.add_argument("--batch", type=int, default=4, help="instances per STOW-RS request")
    p.add_argument("--kill-at", type=float, default=0.5, help="kill -9 at this fraction of the run")
    p.add_argument("--db", nargs="+", default=["sqlite", "postgresql"])
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)
    print(machine_description())
    rows = []
    with ExitStack() as stack:
        pg = stack.enter_context(postgres()) if "postgresql" in args.db else None
        for backend in args.db:
            folder = stack.enter_context(workdir(f"pair-reliability-{backend}-"))
            url = stack.enter_context(database_url(backend, pg, folder))
            rows.append(
                run_backend(
                    backend,
                    url,
                    folder,
                    duration=args.duration,
                    stow=args.stow,
                    cstore=args.cstore,
                    batch=args.batch,
                    kill_at=args.kill_at,
                    seed=args.seed,
                )
            )
    title = (
        f"Reliability: {args.stow} STOW-RS (batch {args.batch}) + {args.cstore} C-STORE clients, "
        f"{args.duration:g} s, kill -9 at {args.kill_at:g}"
    )
    print(print_table(title, HEADERS, rows))
    if argv is None:
        print(command_line())
    return rows


if __name__ == "__main__":
    main()
