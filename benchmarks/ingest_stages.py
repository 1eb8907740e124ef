"""CPU per CT instance in each stage of ingest, in-process (no HTTP, no DIMSE).

The same code ``pair serve`` runs (``repository.ingest.ingest_batch``, batches of ``--batch``
instances), on a fresh node; each stage's function is wrapped with a CPU clock
(``time.process_time``: this process, user + system) and its time counted exclusive of the
stages it calls (the residual-PHI scan runs inside de-identification). The report is the
issue's breakdown: parse, de-identify, scan, encode, index, and the file store beside them.

Run:  PYTHONPATH=src python benchmarks/ingest_stages.py --ct 300 [--db postgresql]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import (
    append_markdown,
    command_line,
    database_url,
    fmt,
    loadavg,
    machine_description,
    make_dataset,
    postgres,
    print_table,
    workdir,
)

# (stage, module, attribute): the functions stage one and two call, wrapped in place
STAGES: tuple[tuple[str, str, str], ...] = (
    ("parse + validate", "pair.repository.prepare", "_parse"),
    ("de-identify", "pair.deid.engine", "Deidentifier.deidentify"),
    ("residual-PHI scan", "pair.deid.engine", "scan"),
    ("burned-in risk", "pair.deid.engine", "burned_in_risk"),
    ("encode (Part 10)", "pair.repository.prepare", "to_part10_bytes"),
    ("index record", "pair.repository.prepare", "IndexRecord.from_dataset"),
    ("hash (SHA-256)", "pair.repository.storage", "ContentStore.digest"),
    ("stage file (write)", "pair.repository.storage", "ContentStore.stage"),
    ("make durable (fsync)", "pair.repository.prepare", "persist"),
    ("index transaction", "pair.repository.ingest", "commit_with_retries"),
)
# the stages the issue's ≤ 3 ms target counts (parse + de-identify + scan + encode + index)
TARGET_STAGES = {
    "parse + validate",
    "de-identify",
    "residual-PHI scan",
    "burned-in risk",
    "encode (Part 10)",
    "index record",
    "index transaction",
}


class Clock:
    """Exclusive CPU time per stage: a stage running inside another is not counted twice."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self._stack: list[list[float]] = []  # [start, child time] per open stage

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [time.process_time(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                spent = time.process_time() - frame[0]
                self.cpu[stage] = self.cpu.get(stage, 0.0) + spent - frame[1]
                if self._stack:
                    self._stack[-1][1] += spent

        return timed


@contextmanager
def instrumented(clock: Clock) -> Iterator[None]:
    import importlib

    undo: list[tuple[Any, str, Any]] = []
    for stage, module_name, attr in STAGES:
        owner: Any = importlib.import_module(module_name)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        kind = type(original) if isinstance(original, classmethod | staticmethod) else None
        timed = clock.wrap(stage, original.__func__ if kind else original)
        setattr(owner, name, kind(timed) if kind else timed)
        undo.append((owner, name, original))
    try:
        yield
    finally:
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)


def run(args: argparse.Namespace) -> tuple[Clock, float, float, int]:
    from pair.accounts import service
    from pair.audit.service import Actor
    from pair.core.config import get_settings
    from pair.core.node import open_node
    from pair.repository.ingest import ingest_batch
    from pair.repository.outcomes import Outcome, Payload

    with workdir() as work:
        data = make_dataset(work / "data", ct=args.ct, cr=0, seed=args.seed)
        blobs = [p.read_bytes() for p in data.files]
        pg_cm = postgres() if args.db == "postgresql" else None
        pg = pg_cm.__enter__() if pg_cm else None
        try:
            with database_url(args.db, pg, work) as url:
                node = open_node(settings=get_settings(work / "node", database_url=url))
                try:
                    with node.db.session() as s:
                        facility_id = service.create_facility(s, "Benchmark", "BENCH").id
                    actor = Actor.system("benchmark", facility_id)
                    batches = [blobs[i : i + args.batch] for i in range(0, len(blobs), args.batch)]
                    warm, timed = batches[0], batches[1:]  # first batch: imports, caches
                    ingest_batch(node, facility_id, [Payload(b) for b in warm], "bench", actor)
                    clock = Clock()
                    n = sum(len(b) for b in timed)
                    with instrumented(clock):
                        cpu0, wall0 = time.process_time(), time.perf_counter()
                        for batch in timed:
                            results = ingest_batch(
                                node, facility_id, [Payload(b) for b in batch], "bench", actor
                            )
                            if any(r.outcome != Outcome.STORED for r in results):
                                raise RuntimeError(f"not stored: {results}")
                        cpu = time.process_time() - cpu0
                        wall = time.perf_counter() - wall0
                finally:
                    node.close()
        finally:
            if pg_cm is not None:
                pg_cm.__exit__(None, None, None)
    return clock, cpu, wall, n


def report(clock: Clock, cpu: float, wall: float, n: int, args: argparse.Namespace) -> str:
    rows = []
    counted = 0.0
    for stage, _, _ in STAGES:
        spent = clock.cpu.get(stage, 0.0)
        counted += spent
        rows.append([stage, fmt(spent * 1000 / n, 3), "yes" if stage in TARGET_STAGES else ""])
    other = fmt((cpu - counted) * 1000 / n, 3)
    rows.append(["other (batch set-up, session, audit, ...)", other, ""])
    target = sum(clock.cpu.get(s, 0.0) for s in TARGET_STAGES) * 1000 / n
    rows.append(["**parse + de-identify + scan + encode + index**", f"**{target:.3f}**", ""])
    rows.append(["total CPU (wall)", f"{cpu * 1000 / n:.3f} ({wall * 1000 / n:.3f})", ""])
    title = (
        f"CPU ms per CT instance by stage ({n} slices 512x512, batches of {args.batch}, {args.db})"
    )
    md = print_table(title, ["stage", "CPU ms/inst", "in the 3 ms target"], rows)
    load = f"load average (1 min) before/after: {args.load_before} / {loadavg()}"
    print(load)
    return f"`{command_line()}`\n\n{machine_description()}; {load}\n\n{md}"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ct", type=int, default=300, help="CT slices 512x512 (default 300)")
    p.add_argument("--batch", type=int, default=10, help="instances per batch (STOW-RS request)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--markdown", help="append the table to this file")
    args = p.parse_args(argv)
    args.load_before = loadavg()
    clock, cpu, wall, n = run(args)
    text = report(clock, cpu, wall, n, args)
    append_markdown(Path(args.markdown) if args.markdown else None, text)


if __name__ == "__main__":
    main()
