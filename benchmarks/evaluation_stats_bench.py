"""Benchmark: the full statistics with all confidence intervals on 10,000 cases (target < 2 s).

Run: PYTHONPATH=src python benchmarks/evaluation_stats_bench.py [--cases 10000] [--boot 2000]
Prints one line per step and the total for evaluate_scores (AUC DeLong + bootstrap, three
operating points with Wilson and bootstrap CIs, ROC band, calibration, two subgroup columns,
a paired comparison, PPV/NPV at a prevalence) and for evaluate_classes (4 ordinal classes:
confusion matrix, one-vs-rest metrics and AUCs, kappas, calibration with bootstrap Brier
intervals, subgroups), best of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.evaluate_multiclass import evaluate_classes
from pair.evaluation.stats import calibration, compare, roc
from pair.evaluation.stats.multiclass import evaluate_multiclass

TARGET_S = 2.0


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best wall-clock and best process CPU time (CPU time is less sensitive to other load)."""
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    n = args.cases
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(1.5 * y - 0.75 + rng.normal(size=n))))
    other = np.clip(p + rng.normal(scale=0.2, size=n), 0, 1)
    groups = {"sex": rng.choice(["F", "M"], n), "manufacturer": rng.choice(list("ABCD"), n)}
    patients = np.arange(n) // 2
    cls = np.array(["negative", "atypical", "indeterminate", "typical"])
    t_mc = rng.integers(0, 4, n)
    p_mc = np.clip(t_mc + rng.choice([-1, 0, 0, 1], n), 0, 3)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), t_mc] += 1.5
    probs_mc = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("AUC + DeLong CI", lambda: roc.auc_ci_delong(y, p)),
        ("DeLong paired test", lambda: compare.delong_test(y, p, other)),
        ("calibration slope/intercept", lambda: calibration.logistic_calibration(y, p)),
        (
            "multiclass + weighted kappa",
            lambda: evaluate_multiclass(cls[t_mc], cls[p_mc], list(cls)),
        ),
        (
            "evaluate_scores (all CIs)",
            lambda: evaluate_scores(
                y,
                p,
                0.5,
                groups=groups,
                prevalence=0.05,
                target_sensitivity=0.9,
                compare_scores=other,
                n_boot=args.boot,
                seed=1,
            ),
        ),
        (
            "evaluate_scores clustered",
            lambda: evaluate_scores(y, p, 0.5, clusters=patients, n_boot=args.boot, seed=1),
        ),
        (
            "evaluate_scores BCa",
            lambda: evaluate_scores(y, p, 0.5, n_boot=args.boot, seed=1, boot_method="bca"),
        ),
        (
            "evaluate_classes (4 classes)",
            lambda: evaluate_classes(
                t_mc, probs_mc, list(cls), ordinal=True, groups=groups, n_boot=args.boot, seed=1
            ),
        ),
        (
            "evaluate_classes clustered",
            lambda: evaluate_classes(
                t_mc, probs_mc, list(cls), ordinal=True, clusters=patients, n_boot=args.boot
            ),
        ),
    ]
    print(f"{n} cases, {args.boot} bootstrap resamples, best of {args.repeat}")
    print(f"{'step':32s} {'wall s':>8s} {'cpu s':>8s}")
    timed = {}
    for name, fn in steps:
        sec, cpu = best_of(fn, args.repeat)
        timed[name] = sec
        print(f"{name:32s} {sec:8.3f} {cpu:8.3f}")
    for name in ("evaluate_scores (all CIs)", "evaluate_classes (4 classes)"):
        verdict = "OK" if timed[name] < TARGET_S else "SLOWER THAN TARGET"
        print(f"target: {name} < {TARGET_S:.1f} s -> {verdict} ({timed[name]:.3f} s wall)")
    print(f"load average at end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
