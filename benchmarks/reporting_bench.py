"""Reporting benchmark: evaluate one report and render every output, per module.

Usage: PYTHONPATH=src python benchmarks/reporting_bench.py [--n 50]
Prints one row per golden case's module: mean and p95 milliseconds per report for evaluate,
text + coded JSON, FHIR Bundle (built and validated), DICOM SR (built and serialised) and
HL7 v2, and the total against the 20 ms target. Exit status 1 if any total p95 misses it.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pair.reporting.engine import evaluate
from pair.reporting.loader import get_module
from pair.reporting.model import Module
from pair.reporting.outputs import fhir, hl7v2, sr, text
from pair.reporting.outputs.context import EvidenceInstance, ReportContext

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "reporting" / "data" / "golden.yaml"
TARGET_MS = 20.0


def _ctx(n_images: int) -> ReportContext:
    study = "1.2.826.0.1.3680043.8.498.1"
    return ReportContext(
        study_uid=study,
        patient_id="GH-0001",
        report_id="1",
        status="final",
        author="Doe^Jane",
        facility="General Hospital",
        study_date="20200401",
        modality="CT",
        signed_at=datetime(2020, 4, 2, tzinfo=UTC),
        evidence=[
            EvidenceInstance(f"{study}.1", f"{study}.1.{i}", "1.2.840.10008.5.1.4.1.1.2", "CT")
            for i in range(1, n_images + 1)
        ],
    )


def _time(
    fn: Callable[[], Any], n: int, clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    out = []
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) * 1000)
    return out


def bench_module(
    m: Module, inputs: dict[str, Any], ctx: ReportContext, n: int
) -> tuple[dict[str, float], list[float]]:
    """Mean ms per output step, and the per-report totals of the whole pipeline."""
    ev = evaluate(m, inputs)

    def do_sr() -> None:
        sr.build_sr(m, ev, ctx).save_as(io.BytesIO(), enforce_file_format=True)

    parts: dict[str, Callable[[], Any]] = {
        "evaluate": lambda: evaluate(m, inputs),
        "text": lambda: (text.narrative(m, ev, ctx), text.coded_json(m, ev, ctx)),
        "fhir": lambda: fhir.bundle(m, ev, ctx),
        "sr": do_sr,
        "hl7": lambda: hl7v2.oru_r01(m, ev, ctx),
    }
    for fn in parts.values():
        fn()  # warm up

    def whole() -> None:
        e = evaluate(m, inputs)
        text.narrative(m, e, ctx)
        text.coded_json(m, e, ctx)
        fhir.bundle(m, e, ctx)
        sr.build_sr(m, e, ctx).save_as(io.BytesIO(), enforce_file_format=True)
        hl7v2.oru_r01(m, e, ctx)

    means = {k: statistics.mean(_time(fn, n)) for k, fn in parts.items()}
    return means, _time(whole, n), _time(whole, n, time.process_time)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50, help="reports per module")
    parser.add_argument("--images", type=int, default=300, help="referenced instances per SR")
    args = parser.parse_args()
    cases = yaml.safe_load(GOLDEN.read_text())["cases"]
    first: dict[str, dict[str, Any]] = {}
    for c in cases:
        first.setdefault(c["module"], c["inputs"])
    ctx = _ctx(args.images)
    header = (
        f"{'module':<20} {'evaluate':>9} {'text+json':>10} {'fhir':>8} {'sr':>8} "
        f"{'hl7':>7} {'total':>8} {'p95':>8} {'cpu p95':>8}"
    )
    print(
        f"per-report milliseconds (mean), n={args.n}, {args.images} images referenced; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for module_id, inputs in first.items():
        means, totals, cpu = bench_module(get_module(module_id), inputs, ctx, args.n)
        p95 = sorted(totals)[int(0.95 * (len(totals) - 1))]
        cpu95 = sorted(cpu)[int(0.95 * (len(cpu) - 1))]
        failed |= p95 > TARGET_MS
        print(
            f"{module_id:<20} {means['evaluate']:>9.2f} {means['text']:>10.2f} "
            f"{means['fhir']:>8.2f} {means['sr']:>8.2f} {means['hl7']:>7.2f} "
            f"{statistics.mean(totals):>8.2f} {p95:>8.2f} {cpu95:>8.2f}"
        )
    verdict = "MISSED" if failed else "met"
    print(f"target: total (wall) p95 < {TARGET_MS:.0f} ms per report -> {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
