"""Ingest (STOW-RS, C-STORE) and WADO-RS retrieve: PAIR (de-identification on) vs Orthanc.

The same files go to a fresh PAIR node and a fresh Orthanc for each transport, in the same run:

- STOW-RS: batches of ``--batch`` instances per request, ``--clients`` concurrent HTTP clients;
- C-STORE with dcmtk ``storescu``: one association, then ``--associations`` parallel ones;
- C-STORE with pynetdicom: ``--associations`` parallel associations (per-instance latency);
- WADO-RS retrieve after the STOW-RS run: whole studies, then single instances.

Run:  PYTHONPATH=src python benchmarks/ingest_bench.py --ct 200 --cr 10
"""

from __future__ import annotations

import argparse
import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from common import (
    PEER_AE,
    DataSet,
    FloorServer,
    OrthancServer,
    PairNode,
    Timing,
    append_markdown,
    command_line,
    cpu_seconds,
    ct_slice,
    database_url,
    fmt,
    load_dataset,
    loadavg,
    machine_description,
    make_dataset,
    orthanc_version,
    postgres,
    print_table,
    running,
    workdir,
)

REQUEST_TIMEOUT_S = 600.0
# urllib3 (what requests and dicomweb-client use) for every timed request: httpx 0.28 read
# Orthanc's 8 MB WADO-RS answers at ~6 MB/s where urllib3 and curl take ~15-80 ms.
Client = urllib3.HTTPConnectionPool
DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class Result:
    scenario: str
    target: str
    sent: int
    stored: int
    mb: float
    timing: Timing
    failed: int = 0
    server_cpu_s: float = float("nan")  # CPU the server process used during the run

    @property
    def cpu_ms_per_instance(self) -> float:
        return self.server_cpu_s * 1000 / self.sent if self.sent else float("nan")

    @property
    def per_s(self) -> float:
        return self.sent / self.timing.wall_s if self.timing.wall_s else float("nan")

    @property
    def mb_s(self) -> float:
        return self.mb / self.timing.wall_s if self.timing.wall_s else float("nan")


def _client(server: Any) -> Client:
    return urllib3.HTTPConnectionPool(
        "127.0.0.1",
        server.port,
        maxsize=1,
        retries=False,
        timeout=urllib3.Timeout(connect=10, read=REQUEST_TIMEOUT_S),
    )


def _run_workers(
    server: Any, items: Sequence[Any], workers: int, work: Callable[[Client, Any], float]
) -> Timing:
    """Run ``work(client, item)`` over items with ``workers`` threads; collect latencies."""
    todo: queue.Queue[Any] = queue.Queue()
    for it in items:
        todo.put(it)
    timing = Timing()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def loop() -> None:
        with _client(server) as client:
            while not errors:
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    dt = work(client, item)
                except BaseException as exc:
                    errors.append(exc)
                    return
                with lock:
                    timing.latencies.append(dt)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(max(1, workers))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    timing.wall_s = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"request failed: {errors[0]!r}") from errors[0]
    return timing


# ---- STOW-RS ---------------------------------------------------------------------------------


def stow_bodies(files: Sequence[Path], batch: int) -> list[tuple[bytes, str, int]]:
    """Multipart/related request bodies, built before timing starts."""
    out = []
    for i in range(0, len(files), batch):
        boundary = uuid.uuid4().hex
        chunks: list[bytes] = []
        group = files[i : i + batch]
        for path in group:
            chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            chunks.append(path.read_bytes())
            chunks.append(b"\r\n")
        chunks.append(f"--{boundary}--\r\n".encode())
        ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
        out.append((b"".join(chunks), ctype, len(group)))
    return out


def stow(server: Any, bodies: Sequence[tuple[bytes, str, int]], clients: int) -> tuple[Timing, int]:
    failed = 0
    lock = threading.Lock()

    def work(client: Client, item: tuple[bytes, str, int]) -> float:
        nonlocal failed
        body, ctype, _ = item
        headers = {**server.headers, "Content-Type": ctype, "Accept": "application/dicom+json"}
        t0 = time.perf_counter()
        r = client.request("POST", server.dicomweb_path + "/studies", body=body, headers=headers)
        dt = time.perf_counter() - t0
        if r.status not in (200, 202):
            raise RuntimeError(f"{server.name} STOW-RS answered {r.status}: {r.data[:300]!r}")
        if r.status == 202:
            with lock:
                failed += len(r.json().get("00081198", {}).get("Value", []))
        return dt

    return _run_workers(server, bodies, clients, work), failed


# ---- C-STORE ---------------------------------------------------------------------------------


def storescu(server: Any, files: Sequence[Path], associations: int) -> Timing:
    """dcmtk storescu, one process (= one association) per share of the files."""
    shares = [list(files[i::associations]) for i in range(associations)]
    timing = Timing()
    t0 = time.perf_counter()
    procs = []
    for share in shares:
        cmd = ["storescu", "-aet", PEER_AE, "-aec", server.ae_title, "-to", "60", "-ta", "60"]
        cmd += ["-td", "300", "127.0.0.1", str(server.dicom_port), *map(str, share)]
        procs.append((time.perf_counter(), subprocess.Popen(cmd, stderr=subprocess.PIPE)))
    for started, proc in procs:
        _, err = proc.communicate(timeout=REQUEST_TIMEOUT_S * 2)
        timing.latencies.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise RuntimeError(f"storescu to {server.name} failed: {err.decode()[-500:]}")
    timing.wall_s = time.perf_counter() - t0
    return timing


def pynetdicom_store(server: Any, files: Sequence[Path], associations: int) -> tuple[Timing, int]:
    """pynetdicom SCU: parallel associations; latency per C-STORE request."""
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    datasets = [dcmread(p) for p in files]  # decoded before timing, like a modality's memory
    classes = sorted({str(ds.SOPClassUID) for ds in datasets})
    shares = [datasets[i::associations] for i in range(associations)]
    timing = Timing()
    failed = 0
    errors: list[str] = []
    lock = threading.Lock()

    def send(share: list[Any]) -> None:
        nonlocal failed
        ae = AE(ae_title=PEER_AE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        for c in classes:
            ae.add_requested_context(c, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
        if not assoc.is_established:
            errors.append(f"association with {server.name} not established")
            return
        try:
            for ds in share:
                t0 = time.perf_counter()
                status = assoc.send_c_store(ds)
                dt = time.perf_counter() - t0
                with lock:
                    timing.latencies.append(dt)
                    if not status or status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
                        failed += 1
        finally:
            assoc.release()

    threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S * 2)
    timing.wall_s = time.perf_counter() - t0
    if errors:
        raise RuntimeError(errors[0])
    return timing, failed


# ---- WADO-RS ---------------------------------------------------------------------------------


def _qido(client: Client, server: Any, path: str, tag: str) -> list[str]:
    url = server.dicomweb_path + path + "?limit=10000"
    r = client.request("GET", url, headers=server.headers)
    if r.status == 204:
        return []
    if r.status != 200:
        raise RuntimeError(f"{server.name} QIDO-RS {url} answered {r.status}")
    return [item[tag]["Value"][0] for item in r.json()]


def instance_paths(server: Any) -> tuple[list[str], list[str]]:
    """Study paths and instance paths as the server names them (PAIR remaps UIDs)."""
    studies, instances = [], []
    with _client(server) as c:
        for st in _qido(c, server, "/studies", "0020000D"):
            studies.append(f"/studies/{st}")
            for se in _qido(c, server, f"/studies/{st}/series", "0020000E"):
                for sop in _qido(c, server, f"/studies/{st}/series/{se}/instances", "00080018"):
                    instances.append(f"/studies/{st}/series/{se}/instances/{sop}")
    return studies, instances


def _parts(r: urllib3.BaseHTTPResponse) -> int:
    m = re.search(r'boundary="?([^";]+)"?', r.headers.get("content-type", ""))
    if not m:
        raise RuntimeError("multipart response without a boundary")
    return r.data.count(b"--" + m.group(1).encode()) - 1


def retrieve(server: Any, paths: Sequence[str], clients: int) -> tuple[Timing, int, float]:
    received = {"parts": 0, "bytes": 0}
    lock = threading.Lock()

    def work(client: Client, path: str) -> float:
        headers = {**server.headers, "Accept": DICOM_ACCEPT}
        t0 = time.perf_counter()
        r = client.request("GET", server.dicomweb_path + path, headers=headers)
        dt = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"{server.name} WADO-RS {r.status}: {r.data[:300]!r}")
        with lock:
            received["parts"] += _parts(r)
            received["bytes"] += len(r.data)
        return dt

    timing = _run_workers(server, paths, clients, work)
    return timing, received["parts"], received["bytes"] / 1e6


# ---- driver ----------------------------------------------------------------------------------


def _warm_up(server: Any, folder: Path) -> None:
    """One STOW-RS request of a different instance, so first-request costs are not timed."""
    import numpy as np
    from pydicom.uid import generate_uid

    path = folder / "warmup.dcm"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        phi = {"PatientName": "WARM^UP", "PatientID": "WARM0001"}
        uid = generate_uid()
        ct_slice(np.random.default_rng(0), generate_uid(), generate_uid(), uid, 1, phi).save_as(
            path, enforce_file_format=True
        )
    body = stow_bodies([path], 1)
    stow(server, body, 1)


def run(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    with workdir() as work:
        data: DataSet = (
            load_dataset(args.data)
            if args.data
            else make_dataset(work / "data", ct=args.ct, cr=args.cr, seed=args.seed)
        )
        print(f"data: {data.description}; PAIR database: {args.db}")
        bodies = stow_bodies(data.files, args.batch)
        scenarios: list[tuple[str, Callable[[Any], tuple[Timing, int]]]] = [
            (
                f"STOW-RS k={args.batch} c={args.clients}",
                lambda s: stow(s, bodies, args.clients),
            ),
            ("C-STORE storescu 1 assoc", lambda s: (storescu(s, data.files, 1), 0)),
            (
                f"C-STORE storescu {args.associations} assoc",
                lambda s: (storescu(s, data.files, args.associations), 0),
            ),
            (
                f"C-STORE pynetdicom {args.associations} assoc",
                lambda s: pynetdicom_store(s, data.files, args.associations),
            ),
        ]
        wanted = set(args.only or [])
        pg_cm = postgres() if args.db == "postgresql" else None
        pg = pg_cm.__enter__() if pg_cm else None
        try:
            for n, (name, fn) in enumerate(scenarios):
                if wanted and not any(w.lower() in name.lower() for w in wanted):
                    continue
                for kind in ("PAIR", "Orthanc", *(("floor",) if args.floor else ())):
                    run_dir = work / f"run{n}-{kind}"
                    run_dir.mkdir()
                    with database_url(args.db, pg, run_dir) as url:
                        server: Any = (
                            PairNode(run_dir, url)
                            if kind == "PAIR"
                            else OrthancServer(run_dir)
                            if kind == "Orthanc"
                            else FloorServer(run_dir)
                        )
                        with running(server):
                            _warm_up(server, work / "warmup")
                            cpu0 = cpu_seconds(server.proc.pid, with_children=True)
                            timing, failed = fn(server)
                            cpu = cpu_seconds(server.proc.pid, with_children=True) - cpu0
                            stored = server.count_instances() - 1
                            results.append(
                                Result(
                                    name,
                                    kind,
                                    len(data.files),
                                    stored,
                                    data.mb,
                                    timing,
                                    failed,
                                    cpu,
                                )
                            )
                            print(
                                f"  {name:32s} {kind:8s} {results[-1].per_s:7.1f} inst/s"
                                f" stored {stored}/{len(data.files)}"
                            )
                            if n == 0 and not args.no_retrieve and kind != "floor":
                                results += _retrieve_all(server, args)
        finally:
            if pg_cm is not None:
                pg_cm.__exit__(None, None, None)
    return results


def _retrieve_all(server: Any, args: argparse.Namespace) -> list[Result]:
    studies, instances = instance_paths(server)
    out = []
    paths = studies * args.rounds
    cpu0 = cpu_seconds(server.proc.pid, with_children=True)
    timing, parts, mb = retrieve(server, paths, args.clients)
    cpu = cpu_seconds(server.proc.pid, with_children=True) - cpu0
    name = f"WADO-RS study c={args.clients}"
    out.append(Result(name, server.name, parts, parts, mb, timing, 0, cpu))
    sample = instances[: args.instance_requests]
    cpu0 = cpu_seconds(server.proc.pid, with_children=True)
    timing, parts, mb = retrieve(server, sample, args.clients)
    cpu = cpu_seconds(server.proc.pid, with_children=True) - cpu0
    name = f"WADO-RS instance c={args.clients}"
    out.append(Result(name, server.name, parts, parts, mb, timing, 0, cpu))
    for r in out[-2:]:
        print(f"  {r.scenario:32s} {r.target:8s} {r.per_s:7.1f} inst/s {r.mb_s:7.1f} MB/s")
    return out


def report(results: list[Result], args: argparse.Namespace) -> str:
    by = {(r.scenario, r.target): r for r in results}
    rows = []
    for r in results:
        other = by.get((r.scenario, "Orthanc"))
        ratio = r.per_s / other.per_s if r.target != "Orthanc" and other else None
        cpu_ratio = (
            other.cpu_ms_per_instance / r.cpu_ms_per_instance
            if r.target != "Orthanc" and other
            else None
        )
        is_storescu = "storescu" in r.scenario
        rows.append(
            [
                r.scenario,
                r.target,
                f"{r.stored}/{r.sent}" if not r.scenario.startswith("WADO") else str(r.sent),
                fmt(r.timing.wall_s, 2),
                fmt(r.per_s),
                fmt(r.mb_s),
                "-" if is_storescu else fmt(r.timing.ms(50)),
                "-" if is_storescu else fmt(r.timing.ms(95)),
                fmt(r.cpu_ms_per_instance),
                fmt(ratio, 2) if ratio is not None else "",
                fmt(cpu_ratio, 2) if cpu_ratio is not None else "",
            ]
        )
    headers = ["scenario", "server", "stored/sent", "wall s", "inst/s", "MB/s"]
    headers += ["p50 ms", "p95 ms", "server CPU ms/inst", "inst/s ÷ Orthanc's"]
    headers += ["Orthanc's CPU per inst ÷ this"]
    title = f"Ingest and retrieve (PAIR on {args.db}, Orthanc {orthanc_version()})"
    md = print_table(title, headers, rows)
    load = f"load average (1 min) before/after: {args.load_before} / {loadavg()}"
    print(load)
    return f"`{command_line()}`\n\n{machine_description()}; {load}\n\n{md}"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ct", type=int, default=200, help="CT slices 512x512 (default 200)")
    p.add_argument("--cr", type=int, default=10, help="CR images 2048x2048 (default 10)")
    p.add_argument("--data", type=Path, help="use these DICOM files instead of generated ones")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--batch", type=int, default=10, help="instances per STOW-RS request")
    p.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients")
    p.add_argument("--associations", type=int, default=2, help="parallel DICOM associations")
    p.add_argument("--rounds", type=int, default=2, help="passes over all studies (WADO-RS)")
    p.add_argument("--instance-requests", type=int, default=200, help="WADO-RS instance GETs")
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--no-retrieve", action="store_true", help="skip the WADO-RS part")
    p.add_argument(
        "--floor",
        action="store_true",
        help="also run ingest_floor.py (receive + durable write only: the stack's upper bound)",
    )
    p.add_argument(
        "--disk",
        action="store_true",
        help="then run disk_ceiling.py: what this disk can store durably vs 10x Orthanc",
    )
    p.add_argument(
        "--stages",
        action="store_true",
        help="then run ingest_stages.py: CPU per CT instance in each stage, in-process",
    )
    p.add_argument("--only", nargs="*", help="run scenarios whose name contains these words")
    p.add_argument("--markdown", type=Path, help="append the result table to this file")
    args = p.parse_args(argv)
    args.load_before = loadavg()
    results = run(args)
    append_markdown(args.markdown, report(results, args))
    if args.disk:
        append_markdown(args.markdown, disk_report(results))
    if args.stages:
        append_markdown(args.markdown, stages_report(args))


def stages_report(args: argparse.Namespace) -> str:
    """Where a CT instance's CPU goes in PAIR, stage by stage (``ingest_stages.py``), with the
    batch size of the STOW-RS runs and one instance per batch as C-STORE ingests."""
    import ingest_stages

    parts = []
    for batch in (args.batch, 1):
        n = max(args.ct, 2 * batch)
        stage_args = argparse.Namespace(
            ct=n, batch=batch, seed=args.seed, db=args.db, load_before=loadavg()
        )
        parts.append(ingest_stages.report(*ingest_stages.run(stage_args), stage_args))
    return "\n\n".join(parts)


def disk_report(results: list[Result]) -> str:
    """The disk's durable write ceiling next to 10x Orthanc's fastest ingest in this run."""
    import disk_ceiling

    orthanc = [r for r in results if r.target == "Orthanc" and not r.scenario.startswith("WADO")]
    fastest = max(orthanc, key=lambda r: r.mb_s) if orthanc else None
    args = argparse.Namespace(size=528_000, orthanc_mb_s=fastest and round(fastest.mb_s, 1))
    with workdir("pair-disk-") as root:
        rows = disk_ceiling.measure(root, args.size, 2048 * 1024 * 1024)
    if fastest is not None:
        print(f"Orthanc's fastest ingest in this run: {fastest.scenario}, {fastest.mb_s:.1f} MB/s")
    return disk_ceiling.report(rows, args)


if __name__ == "__main__":
    main()
