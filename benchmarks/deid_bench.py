"""De-identification alone, one process, one thread: instances/s for CT 512^2 and CR 2k^2.

Uses the same engine and call the ingest pipeline uses
(``pair.deid.service.deidentifier_for(session, settings, facility).deidentify(dataset)``) on a
throwaway SQLite node, so pseudonym and UID mappings are really created and looked up. Two
timings per modality: the ``deidentify`` call alone (dataset already decoded), and
decode + de-identify + encode (what one instance costs the ingest pipeline besides storage
and indexing).

Run:  PYTHONPATH=src python benchmarks/deid_bench.py --ct 200 --cr 20
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import (
    Timing,
    append_markdown,
    command_line,
    fmt,
    loadavg,
    machine_description,
    make_dataset,
    print_table,
    workdir,
)


@dataclass
class Row:
    label: str
    n: int
    mb: float
    deid: Timing
    cpu_s: float
    full: Timing


def bench(files: Sequence[Path], label: str, node_dir: Path) -> Row:
    import pydicom

    from pair.accounts import service as accounts
    from pair.core.node import open_node
    from pair.deid.service import deidentifier_for
    from pair.dicom.parse import parse_bytes, to_part10_bytes

    node = open_node(node_dir)
    raw = [p.read_bytes() for p in files]
    mb = sum(len(b) for b in raw) / 1e6
    try:
        with node.db.session() as s:
            code = "".join(c for c in label if c.isalnum())[:8].upper()
            facility = accounts.create_facility(s, f"Deid bench {label}", code)
            facility_id = facility.id
        # 1) deidentify() alone on decoded datasets (one warm-up instance first)
        datasets = [pydicom.dcmread(io.BytesIO(b)) for b in raw]
        deid = Timing()
        with node.db.session() as s:
            facility = accounts.get_facility(s, facility_id)
            engine = deidentifier_for(s, node.settings, facility)
            engine.deidentify(pydicom.dcmread(io.BytesIO(raw[0])))
            cpu0, t_all = time.process_time(), time.perf_counter()
            for ds in datasets:
                t0 = time.perf_counter()
                engine.deidentify(ds)
                deid.latencies.append(time.perf_counter() - t0)
            deid.wall_s = time.perf_counter() - t_all
            cpu = time.process_time() - cpu0
        # 2) decode bytes + de-identify + encode, as ingest does
        full = Timing()
        with node.db.session() as s:
            facility = accounts.get_facility(s, facility_id)
            engine = deidentifier_for(s, node.settings, facility)
            t_all = time.perf_counter()
            for b in raw:
                t0 = time.perf_counter()
                parsed = parse_bytes(b)
                result = engine.deidentify(parsed.dataset)
                to_part10_bytes(result.dataset, parsed.transfer_syntax_uid)
                full.latencies.append(time.perf_counter() - t0)
            full.wall_s = time.perf_counter() - t_all
    finally:
        node.close()
    return Row(label, len(files), mb, deid, cpu, full)


def report(rows: list[Row]) -> str:
    table = []
    for r in rows:
        table.append(
            [
                r.label,
                str(r.n),
                fmt(r.n / r.deid.wall_s),
                fmt(r.mb / r.deid.wall_s),
                fmt(r.deid.ms(50), 2),
                fmt(r.deid.ms(95), 2),
                fmt(r.n / r.cpu_s if r.cpu_s else float("nan")),
                fmt(r.cpu_s / r.deid.wall_s, 2),
                fmt(r.n / r.full.wall_s),
                fmt(r.full.ms(50), 2),
            ]
        )
    headers = ["instances", "n", "deid inst/s", "deid MB/s", "p50 ms", "p95 ms"]
    headers += ["inst per CPU-s", "CPU/wall"]
    headers += ["decode+deid+encode inst/s", "p50 ms"]
    md = print_table("De-identification, 1 process, 1 thread", headers, table)
    load = f"load average (1 min) at the end: {loadavg()}"
    return f"`{command_line()}`\n\n{machine_description()}; {load}\n\n{md}"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ct", type=int, default=200, help="CT slices 512x512 (default 200)")
    p.add_argument("--cr", type=int, default=20, help="CR images 2048x2048 (default 20)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--markdown", type=Path, help="append the result table to this file")
    args = p.parse_args(argv)
    rows = []
    with workdir() as w:
        data = make_dataset(w / "data", ct=args.ct, cr=args.cr, seed=args.seed)
        ct = [f for f in data.files if f.name.startswith("ct_")]
        cr = [f for f in data.files if f.name.startswith("cr_")]
        if ct:
            rows.append(bench(ct, "CT 512x512", w / "node-ct"))
        if cr:
            rows.append(bench(cr, "CR 2048x2048", w / "node-cr"))
    append_markdown(args.markdown, report(rows))


if __name__ == "__main__":
    main()
