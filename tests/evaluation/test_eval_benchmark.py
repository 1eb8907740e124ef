"""The benchmark script runs end to end (small sizes) and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_script_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks/evaluation_stats_bench.py"),
            "--cases",
            "400",
            "--boot",
            "100",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    ).stdout
    assert "evaluate_scores (all CIs)" in out and "target: evaluate_scores" in out
