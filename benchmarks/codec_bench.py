"""Per-instance CPU of the DICOM codec on the ingest path: parse and Part 10 encode, old vs new.

Encode input is what ingest encodes: the real de-identifier's output
(``deidentifier_for(session, settings, facility).deidentify(parsed.dataset).dataset``) on a
throwaway SQLite node, for generated CT 512x512 slices and CR radiographs
(``common.make_dataset``). "old" is pydicom's ``dcmwrite`` (``_to_part10_bytes_pydicom``), "new"
is ``to_part10_bytes``; parse "old" is ``pydicom.dcmread`` plus the original validation
(``_parse_bytes_pydicom``), "new" is ``parse_bytes``. The two encoders' bytes are compared for
every instance. CPU is ``time.process_time`` of one thread, median of ``--repeat`` passes over
all instances (old and new passes alternate), divided by the number of instances.

Run:  PYTHONPATH=src python benchmarks/codec_bench.py --ct 100 --cr 5
      PYTHONPATH=src python benchmarks/codec_bench.py --profile encode   (cProfile, top 25)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import (
    append_markdown,
    command_line,
    fmt,
    loadavg,
    machine_description,
    make_dataset,
    print_table,
    workdir,
)


def cpu_ms(
    old: Callable[[Any], object], new: Callable[[Any], object], items: Sequence[Any], repeat: int
) -> tuple[float, float]:
    """Median CPU ms per item of ``old`` and ``new``, passes alternating (load drifts)."""
    old(items[0])  # warm-up
    new(items[0])
    passes: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((old, passes[0]), (new, passes[1])):
            t0 = time.process_time()
            for item in items:
                fn(item)
            out.append((time.process_time() - t0) / len(items) * 1000)
    return statistics.median(passes[0]), statistics.median(passes[1])


def bench(files: Sequence[Path], label: str, node_dir: Path, repeat: int) -> list[str]:
    from pair.accounts import service as accounts
    from pair.core.node import open_node
    from pair.deid.service import deidentifier_for
    from pair.dicom.parse import (
        _parse_bytes_pydicom,
        _to_part10_bytes_pydicom,
        parse_bytes,
        to_part10_bytes,
    )

    raw = [p.read_bytes() for p in files]
    node = open_node(node_dir)
    try:
        with node.db.session() as s:
            code = "".join(c for c in label if c.isalnum())[:8].upper()
            engine = deidentifier_for(s, node.settings, accounts.create_facility(s, label, code))
            parsed = [parse_bytes(b) for b in raw]
            ts = parsed[0].transfer_syntax_uid
            outs = [engine.deidentify(p.dataset).dataset for p in parsed]
            for ds in outs:
                if to_part10_bytes(ds, ts) != _to_part10_bytes_pydicom(ds, ts):
                    raise SystemExit(f"{label}: encoders disagree on {ds.SOPInstanceUID}")
            parse_old, parse_new = cpu_ms(_parse_bytes_pydicom, parse_bytes, raw, repeat)
            enc_old, enc_new = cpu_ms(
                lambda ds: _to_part10_bytes_pydicom(ds, ts),
                lambda ds: to_part10_bytes(ds, ts),
                outs,
                repeat,
            )
    finally:
        node.close()
    return [
        label,
        str(len(files)),
        fmt(parse_old, 3),
        fmt(parse_new, 3),
        fmt(parse_old / parse_new, 1) + "x",
        fmt(enc_old, 3),
        fmt(enc_new, 3),
        fmt(enc_old / enc_new, 1) + "x",
        fmt(parse_old + enc_old, 3),
        fmt(parse_new + enc_new, 3),
    ]


def profile(files: Sequence[Path], what: str, node_dir: Path) -> None:
    from pair.accounts import service as accounts
    from pair.core.node import open_node
    from pair.deid.service import deidentifier_for
    from pair.dicom.parse import parse_bytes, to_part10_bytes

    raw = [p.read_bytes() for p in files]
    node = open_node(node_dir)
    try:
        with node.db.session() as s:
            engine = deidentifier_for(s, node.settings, accounts.create_facility(s, "P", "P"))
            parsed = [parse_bytes(b) for b in raw]
            outs = [engine.deidentify(p.dataset).dataset for p in parsed]
            ts = parsed[0].transfer_syntax_uid
            prof = cProfile.Profile()
            prof.enable()
            if what == "parse":
                for b in raw:
                    parse_bytes(b)
            else:
                for ds in outs:
                    to_part10_bytes(ds, ts)
            prof.disable()
    finally:
        node.close()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ct", type=int, default=100, help="CT slices 512x512 (default 100)")
    p.add_argument("--cr", type=int, default=5, help="CR images (default 5)")
    p.add_argument("--cr-size", type=int, default=2048, help="CR matrix size (default 2048)")
    p.add_argument("--repeat", type=int, default=5, help="timed passes (default 5)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--profile", choices=["parse", "encode"], help="cProfile the new code on CT")
    p.add_argument("--markdown", type=Path, help="append the result table to this file")
    args = p.parse_args(argv)
    with workdir() as w:
        data = make_dataset(w / "data", ct=args.ct, cr=args.cr, cr_size=args.cr_size)
        ct = [f for f in data.files if f.name.startswith("ct_")]
        cr = [f for f in data.files if f.name.startswith("cr_")]
        if args.profile:
            profile(ct or cr, args.profile, w / "node-prof")
            return
        rows = []
        if ct:
            rows.append(bench(ct, "CT 512x512", w / "node-ct", args.repeat))
        if cr:
            rows.append(bench(cr, f"CR {args.cr_size}x{args.cr_size}", w / "node-cr", args.repeat))
    headers = ["instances", "n", "parse old ms", "parse new ms", "parse x"]
    headers += ["encode old ms", "encode new ms", "encode x", "old total ms", "new total ms"]
    md = print_table("DICOM codec CPU per instance, 1 thread (median of passes)", headers, rows)
    load = f"load average (1 min) at the end: {loadavg()}"
    append_markdown(args.markdown, f"`{command_line()}`\n\n{machine_description()}; {load}\n\n{md}")
    print(load)


if __name__ == "__main__":
    main()
