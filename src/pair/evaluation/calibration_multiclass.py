"""Calibration of multiclass probabilities: multiclass Brier score and one-vs-rest calibration.

Each class's probability is judged as a binary prediction of "this class vs the rest" with the
binary machinery (``evaluate.calibration_result``: Brier, logistic recalibration slope and
intercept, calibration-in-the-large, reliability bins with ECE). Brier intervals come from one
seeded bootstrap over cases (stratified by reference class), or over patients when they have
several cases, the same resampling the rest of the evaluation uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pair.evaluation.evaluate import boot_estimate, calibration_result
from pair.evaluation.result import ClassCalibration, MulticlassCalibration
from pair.evaluation.stats.arrays import FloatArray, IntArray
from pair.evaluation.stats.bootstrap import run_bootstrap

NOT_PROBABILITIES = "Class scores are not probabilities in [0, 1]: calibration was not assessed."
NOT_NORMALISED = (
    "The class probabilities of some cases do not sum to 1 (several images combined per class, "
    "e.g. by max): the multiclass Brier score is not given; one-vs-rest calibration is."
)


def multiclass_calibration(
    y: IntArray,
    probs: FloatArray,
    classes: list[str],
    *,
    level: float,
    n_boot: int,
    seed: int,
    clusters: Any | None = None,
) -> tuple[MulticlassCalibration | None, list[str]]:
    """Calibration of ``probs`` (n, k) against class indices ``y``; returns (result, warnings)."""
    if probs.min() < 0 or probs.max() > 1:
        return None, [NOT_PROBABILITIES]
    n, k = probs.shape
    normalised = bool(np.allclose(probs.sum(axis=1), 1, atol=1e-4))
    squared = (probs - np.eye(k)[y]) ** 2  # (n, k): per-class squared error of each case
    design = np.hstack([squared, squared.sum(axis=1, keepdims=True)])

    def stat_fn(w: FloatArray) -> dict[str, FloatArray]:
        sums = w @ design / w.sum(axis=1, keepdims=True)
        out = {f"brier:{i}": sums[:, i] for i in range(k)}
        out["brier"] = sums[:, k]
        return out

    run = run_bootstrap(
        stat_fn,
        n,
        n_boot=n_boot,
        seed=seed,
        strata=None if clusters is not None else y,
        clusters=clusters,
    )
    warnings: list[str] = [] if normalised else [NOT_NORMALISED]
    per_class: list[ClassCalibration] = []
    skipped: list[str] = []
    for i, name in enumerate(classes):
        ref = (y == i).astype(np.int64)
        if ref.sum() in (0, n):
            skipped.append(name)
            continue
        brier = boot_estimate(run, f"brier:{i}", float(squared[:, i].mean()), level, "percentile")
        result = calibration_result(ref, probs[:, i], brier, level)
        per_class.append(ClassCalibration(name=name, calibration=result))
        if not result.converged:
            warnings.append(
                f"Logistic recalibration of class {name} did not converge (separation?): "
                "its calibration slope and intercept are unreliable."
            )
    if skipped:
        warnings.append(
            "One-vs-rest calibration needs reference cases in and outside a class; not assessed "
            "for: " + ", ".join(skipped) + "."
        )
    overall = None
    if normalised:
        total = float(squared.sum(axis=1).mean())
        overall = boot_estimate(run, "brier", total, level, "percentile")
    return MulticlassCalibration(brier=overall, per_class=per_class), warnings
