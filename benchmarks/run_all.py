"""Run every benchmark with modest defaults (a few minutes on 2 cores); ``--full`` for the
sizes reported in docs/benchmarks.md. Each script can also be run on its own with more options.

Run:  PYTHONPATH=src python benchmarks/run_all.py [--full] [--markdown results.md]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, machine_description, orthanc_version

HERE = Path(__file__).resolve().parent
STEP_TIMEOUT_S = 3600


def steps(full: bool) -> list[list[str]]:
    if full:
        return [
            ["deid_bench.py", "--ct", "200", "--cr", "20"],
            ["codec_bench.py", "--ct", "200", "--cr", "10"],
            ["ingest_bench.py", "--ct", "200", "--cr", "10", "--floor", "--disk"],
            ["ingest_bench.py", "--ct", "200", "--cr", "10", "--db", "postgresql", "--no-retrieve"],
            ["qido_bench.py", "--sizes", "100000", "1000000"],
        ]
    return [
        ["deid_bench.py", "--ct", "50", "--cr", "5"],
        ["codec_bench.py", "--ct", "50", "--cr", "2"],
        ["ingest_bench.py", "--ct", "100", "--cr", "4", "--instance-requests", "50", "--floor"],
        ["qido_bench.py", "--sizes", "100000", "--requests", "200"],
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--full", action="store_true", help="docs/benchmarks.md sizes (longer)")
    p.add_argument("--markdown", type=Path, help="append every result table to this file")
    args = p.parse_args()
    print(f"machine: {machine_description()}; Orthanc {orthanc_version()}")
    env_path = str(REPO / "src")
    failed = []
    for step in steps(args.full):
        cmd = [sys.executable, str(HERE / step[0]), *step[1:]]
        if args.markdown:
            cmd += ["--markdown", str(args.markdown.resolve())]
        print(f"\n=== {' '.join(step)}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(
                cmd, env={**_env(), "PYTHONPATH": env_path}, timeout=STEP_TIMEOUT_S
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        print(f"=== {step[0]} finished in {time.perf_counter() - t0:.0f} s (exit {rc})")
        if rc != 0:
            failed.append(step[0])
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)}")


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


if __name__ == "__main__":
    main()
