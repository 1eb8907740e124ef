"""QIDO-RS latency through the real HTTP server with 10^5 / 10^6 instances indexed.

The index tables (patient/study/series/instance) are filled directly with SQLAlchemy Core bulk
inserts (no files: QIDO-RS answers from the index), shaped like the repository after
de-identification: ``instances / 200`` studies x 4 series x 50 instances, 1-3 studies per
patient, study dates spread over 2020-03..2021-12, study modality CT 60 % / CR 20 % / DX 10 % /
MR 10 %. Then ``pair serve`` answers typical queries, one client, keep-alive, each query
repeated ``--requests`` times with random parameters. Target: p95 <= 20 ms at 10^6.

Run:  PYTHONPATH=src python benchmarks/qido_bench.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
from common import (
    PairNode,
    Timing,
    append_markdown,
    command_line,
    cpu_seconds,
    database_url,
    fmt,
    loadavg,
    machine_description,
    postgres,
    print_table,
    running,
    workdir,
)
from sqlalchemy import create_engine, insert, text

TARGET_P95_MS = 20.0
SERIES_PER_STUDY = 4
INSTANCES_PER_SERIES = 50
MODALITIES = [("CT", 0.6), ("CR", 0.2), ("DX", 0.1), ("MR", 0.1)]
FIRST_DAY = dt.date(2020, 3, 1)
DAYS = 670
CHUNK = 20000


@dataclass
class Catalog:
    """What was loaded, to draw realistic query parameters from."""

    studies: int = 0
    patients: list[str] = field(default_factory=list)
    study_uids: list[str] = field(default_factory=list)
    series: list[tuple[str, str]] = field(default_factory=list)  # (study uid, series uid)
    sops: list[str] = field(default_factory=list)


def _uid(kind: int, n: int) -> str:
    return f"2.25.{kind}{n:012d}"


def _chunks(rows: Iterator[dict[str, Any]], size: int = CHUNK) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def populate(url: str, facility_id: int, instances: int, seed: int) -> Catalog:
    """Bulk-insert the index rows; returns a sample of keys for the queries."""
    from pair.repository.models import Instance, Patient, Series, Study

    rng = random.Random(seed)
    n_studies = max(1, instances // (SERIES_PER_STUDY * INSTANCES_PER_SERIES))
    now = dt.datetime.now(dt.UTC)
    cat = Catalog(studies=n_studies)
    engine = create_engine(url)
    # patients: 1-3 studies each (mean ~1.5)
    owner: list[int] = []
    while len(owner) < n_studies:
        p = len(cat.patients) + 1
        cat.patients.append(f"BENCH-{p:07d}")
        owner += [p] * rng.choice((1, 1, 1, 2, 2, 3))
    owner = owner[:n_studies]
    kinds, weights = zip(*MODALITIES, strict=True)
    with engine.begin() as conn:
        conn.execute(
            insert(Patient.__table__),
            [
                {
                    "id": i,
                    "facility_id": facility_id,
                    "pseudonym": name,
                    "patient_sex": "MF"[i % 2],
                    "patient_birth_date": f"19{40 + i % 50}0101",
                    "shareable": True,
                    "created_at": now,
                }
                for i, name in enumerate(cat.patients, 1)
            ],
        )
    study_rows, modality_of = [], {}
    for s in range(1, n_studies + 1):
        p = owner[s - 1]
        mod = rng.choices(kinds, weights)[0]
        modality_of[s] = mod
        day = FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS))
        uid = _uid(1, s)
        cat.study_uids.append(uid)
        study_rows.append(
            {
                "id": s,
                "facility_id": facility_id,
                "patient_pk": p,
                "study_uid": uid,
                "study_date": day.strftime("%Y%m%d"),
                "study_time": f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}00",
                "accession_number": f"BA{s:08d}",
                "study_id": "1",
                "study_description": f"{mod} CHEST",
                "referring_physician_name": "",
                "patient_name": cat.patients[p - 1],
                "patient_id_value": cat.patients[p - 1],
                "patient_birth_date": f"19{40 + p % 50}0101",
                "patient_sex": "MF"[p % 2],
                "patient_age": f"0{30 + p % 60}Y",
                "modalities": mod,
                "num_series": SERIES_PER_STUDY,
                "num_instances": SERIES_PER_STUDY * INSTANCES_PER_SERIES,
                "updated_at": now,
                "shareable": True,
                "created_at": now,
            }
        )
    with engine.begin() as conn:
        for batch in _chunks(iter(study_rows)):
            conn.execute(insert(Study.__table__), batch)

    def series_rows() -> Iterator[dict[str, Any]]:
        for s in range(1, n_studies + 1):
            for k in range(SERIES_PER_STUDY):
                se = (s - 1) * SERIES_PER_STUDY + k + 1
                yield {
                    "id": se,
                    "study_pk": s,
                    "series_uid": _uid(2, se),
                    "modality": modality_of[s],
                    "series_number": k + 1,
                    "series_description": f"SERIES {k + 1}",
                    "body_part_examined": "CHEST",
                    "manufacturer": "ACME",
                    "manufacturer_model_name": "Scanner 3000",
                    "performed_procedure_step_start_date": "",
                    "performed_procedure_step_start_time": "",
                    "num_instances": INSTANCES_PER_SERIES,
                    "created_at": now,
                }

    with engine.begin() as conn:
        for batch in _chunks(series_rows()):
            conn.execute(insert(Series.__table__), batch)
    for _ in range(1000):
        s = rng.randrange(1, n_studies + 1)
        k = rng.randrange(SERIES_PER_STUDY)
        cat.series.append((_uid(1, s), _uid(2, (s - 1) * SERIES_PER_STUDY + k + 1)))
    n_series = n_studies * SERIES_PER_STUDY
    sop_sample = set(rng.sample(range(1, n_series * INSTANCES_PER_SERIES + 1), 1000))
    cat.sops = [_uid(3, i) for i in sorted(sop_sample)]

    def instance_rows() -> Iterator[dict[str, Any]]:
        i = 0
        for se in range(1, n_series + 1):
            for n in range(1, INSTANCES_PER_SERIES + 1):
                i += 1
                yield {
                    "id": i,
                    "series_pk": se,
                    "sop_instance_uid": _uid(3, i),
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                    "instance_number": n,
                    "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                    "rows": 512,
                    "columns": 512,
                    "number_of_frames": None,
                    "storage_path": f"{i % 256:02x}/{i % 251:02x}/{i:064x}",
                    "sha256": f"{i:064x}",
                    "size": 525_000,
                    "source": "bench",
                    "burned_in_risk": "",
                    "received_at": now,
                }

    with engine.begin() as conn:
        for batch in _chunks(instance_rows()):
            conn.execute(insert(Instance.__table__), batch)
    if engine.dialect.name == "postgresql":
        # What autovacuum does shortly after a bulk load; done now so it does not run (and
        # compete for the CPUs) while latencies are measured.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return cat


# ---- queries ---------------------------------------------------------------------------------


def queries(cat: Catalog, rng: random.Random) -> dict[str, Callable[[], str]]:
    """Query name -> a function that returns a fresh path+query for one request."""

    def date_range() -> str:
        start = FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS - 30))
        end = start + dt.timedelta(days=30)
        rng_ = f"{start:%Y%m%d}-{end:%Y%m%d}"
        return "/studies?" + urlencode({"StudyDate": rng_, "ModalitiesInStudy": "CT", "limit": 100})

    def name_prefix() -> str:
        p = rng.choice(cat.patients)
        return "/studies?" + urlencode({"PatientName": p[:-1] + "*", "limit": 100})

    def paging() -> str:
        offset = rng.randrange(0, max(1, cat.studies - 50), 50) if cat.studies > 50 else 0
        return "/studies?" + urlencode({"limit": 50, "offset": offset})

    def series_of_study() -> str:
        return f"/studies/{rng.choice(cat.study_uids)}/series"

    def instances_of_series() -> str:
        st, se = rng.choice(cat.series)
        return f"/studies/{st}/series/{se}/instances"

    return {
        "studies PatientID=": lambda: "/studies?PatientID=" + rng.choice(cat.patients),
        "studies StudyDate=range&ModalitiesInStudy=CT limit=100": date_range,
        "studies PatientName=prefix* limit=100": name_prefix,
        "studies limit=50&offset=random": paging,
        "series of a study": series_of_study,
        "instances of a series (50)": instances_of_series,
        "instances SOPInstanceUID=": lambda: "/instances?SOPInstanceUID=" + rng.choice(cat.sops),
    }


@dataclass
class Measured:
    timing: Timing
    mean_results: float
    server_cpu_ms: float  # pair serve process CPU per request
    db_cpu_ms: float  # PostgreSQL server CPU per request (0 for SQLite: it is in-process)
    load: str


def measure(node: PairNode, make: Callable[[], str], n: int, warmup: int, pg_pid: int) -> Measured:
    """Sequential requests over one keep-alive connection, with the server's CPU per request."""
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1", node.port, maxsize=1, retries=False, timeout=urllib3.Timeout(60, 60)
    )
    timing = Timing()
    results = 0
    headers = {**node.headers, "Accept": "application/dicom+json"}
    assert node.proc is not None
    load = loadavg()
    with pool:
        t_all = time.perf_counter()
        for i in range(warmup + n):
            if i == warmup:
                cpu0 = cpu_seconds(node.proc.pid)
                db0 = cpu_seconds(pg_pid, with_children=True) if pg_pid else 0.0
            path = node.dicomweb_path + make()
            t0 = time.perf_counter()
            r = pool.request("GET", path, headers=headers)
            elapsed = time.perf_counter() - t0
            if r.status not in (200, 204):
                raise RuntimeError(f"{path} answered {r.status}: {r.data[:300]!r}")
            if i >= warmup:
                timing.latencies.append(elapsed)
                results += len(json.loads(r.data)) if r.status == 200 else 0
        timing.wall_s = time.perf_counter() - t_all
        cpu = cpu_seconds(node.proc.pid) - cpu0
        db = cpu_seconds(pg_pid, with_children=True) - db0 if pg_pid else 0.0
    k = max(1, n)
    return Measured(timing, results / k, cpu * 1000 / k, db * 1000 / k, load)


# ---- EXPLAIN ---------------------------------------------------------------------------------


def explain(url: str, facility_id: int, path: str) -> str:
    """The plan of the SQL the server runs for one QIDO-RS path (captured, then EXPLAINed)."""
    from urllib.parse import parse_qsl, urlsplit

    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from pair.repository.query import find_instances, find_series, find_studies, parse_query

    engine = create_engine(url)
    captured: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        captured.append((statement, params))

    parts = urlsplit(path)
    q = parse_query(parse_qsl(parts.query))
    seg = parts.path.strip("/").split("/")
    event.listen(engine, "before_cursor_execute", grab)
    with Session(engine) as s:
        if seg[-1] == "studies":
            find_studies(s, facility_id, q)
        elif seg[-1] == "series":
            find_series(s, facility_id, q, seg[1] if len(seg) > 1 else None)
        else:
            study = seg[1] if len(seg) > 1 and seg[0] == "studies" else None
            series = seg[3] if len(seg) > 3 else None
            find_instances(s, facility_id, q, study, series)
    event.remove(engine, "before_cursor_execute", grab)
    statement, params = captured[-1]
    lines = []
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        if engine.dialect.name == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + statement, params)
            lines = [str(row[-1]) for row in cur.fetchall()]
        else:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            lines = [str(row[0]) for row in cur.fetchall()]
    engine.dispose()
    return statement + "\n" + "\n".join(lines)


# ---- driver ----------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    size: int
    query: str
    m: Measured
    load_s: float


def run_one(
    backend: str, size: int, args: argparse.Namespace, pg: Any, base: Path
) -> tuple[list[Row], list[str]]:
    out: list[Row] = []
    plans: list[str] = []
    run_dir = base / f"{backend}-{size}"
    run_dir.mkdir()
    with database_url(backend, pg, run_dir) as url:
        node = PairNode(run_dir, url)
        node.provision()
        t0 = time.perf_counter()
        cat = populate(url, node.facility_id, size, args.seed)
        load_s = time.perf_counter() - t0
        print(f"{backend} {size:>9,} instances loaded in {load_s:.1f} s ({cat.studies} studies)")
        rng = random.Random(args.seed)
        with running(node):
            pg_pid = pg.pid if backend == "postgresql" else 0
            for name, make in queries(cat, rng).items():
                m = measure(node, make, args.requests, args.warmup, pg_pid)
                out.append(Row(backend, size, name, m, load_s))
                timing, p95 = m.timing, m.timing.ms(95)
                print(
                    f"  {name:58s} p50 {timing.ms(50):6.1f}  p95 {p95:6.1f} ms"
                    f"  server CPU {m.server_cpu_ms:5.1f} ms/req  load {m.load}"
                )
                if args.explain or (size >= 10**6 and p95 > TARGET_P95_MS):
                    plans.append(
                        f"-- {backend} {size} {name}\n{explain(url, node.facility_id, make())}"
                    )
    return out, plans


def report(rows: list[Row], plans: list[str]) -> str:
    table = []
    for r in rows:
        t = r.m.timing
        ok = t.ms(95) <= TARGET_P95_MS
        table.append(
            [
                r.query,
                r.backend,
                f"{r.size:,}",
                str(len(t.latencies)),
                fmt(r.m.mean_results),
                fmt(t.ms(50)),
                fmt(t.ms(95)),
                fmt(t.ms(99)),
                fmt(r.m.server_cpu_ms),
                fmt(r.m.db_cpu_ms) if r.backend == "postgresql" else "-",
                r.m.load,
                ("yes" if ok else "NO") if r.size >= 10**6 else "",
            ]
        )
    headers = ["query", "backend", "instances", "requests", "results"]
    headers += ["p50 ms", "p95 ms", "p99 ms", "server CPU ms/req", "PG CPU ms/req", "load"]
    headers += ["p95<=20ms"]
    md = print_table("QIDO-RS latency through pair serve (1 client)", headers, table)
    loads = sorted({(r.backend, r.size, r.load_s) for r in rows})
    md += "\nBulk load: " + ", ".join(f"{b} {s:,}: {t:.0f} s" for b, s, t in loads) + "\n"
    if plans:
        print("\n".join(plans))
        md += "\nQuery plans:\n\n```\n" + "\n\n".join(plans) + "\n```\n"
    return f"`{command_line()}`\n\n{machine_description()}\n\n{md}"  # load: per row


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    p.add_argument("--requests", type=int, default=200, help="timed requests per query")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests per query first")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--explain", action="store_true", help="print every query's plan")
    p.add_argument("--markdown", type=Path, help="append the result table to this file")
    args = p.parse_args(argv)
    rows: list[Row] = []
    plans: list[str] = []
    with workdir() as base:
        pg_cm = postgres() if "postgresql" in args.backends else None
        pg = pg_cm.__enter__() if pg_cm else None
        try:
            for size in args.sizes:
                for backend in args.backends:
                    r, pl = run_one(backend, size, args, pg, base)
                    rows += r
                    plans += pl
        finally:
            if pg_cm is not None:
                pg_cm.__exit__(None, None, None)
    append_markdown(args.markdown, report(rows, plans))


if __name__ == "__main__":
    main()
