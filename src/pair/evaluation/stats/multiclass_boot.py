"""Weighted multiclass statistics for the (patient-clustered) bootstrap.

A replicate is a vector of case weights (draw counts), as in ``stats.bootstrap``: the weighted
confusion matrix is ``w @ D`` with ``D`` the one-hot (reference, prediction) design, and every
statistic (accuracy, kappas, one-vs-rest sensitivity/specificity/PPV/NPV) follows from it; the
one-vs-rest AUCs come from ``stats.weighted`` on each class's probability column. With all
weights 1 each statistic equals the ordinary one; with integer weights it equals the statistic
on the data repeated by those counts (the tests check both against scikit-learn).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pair.evaluation.stats.arrays import FloatArray, IntArray
from pair.evaluation.stats.bootstrap import BootstrapRun, run_bootstrap
from pair.evaluation.stats.multiclass import Weighting, agreement_weights
from pair.evaluation.stats.weighted import SortedScores, ratio, weighted_auc


def confusion_design(t: IntArray, p: IntArray, k: int) -> FloatArray:
    """(n, k*k) indicators of each case's (reference, predicted) cell."""
    d = np.zeros((t.size, k * k), dtype=np.float32)
    d[np.arange(t.size), t * k + p] = 1.0
    return d


def kappa_from_confusion(cm: FloatArray, weighting: Weighting) -> FloatArray:
    """Cohen's (weighted) kappa of each (B, k, k) weighted confusion matrix; nan when undefined."""
    k = cm.shape[-1]
    w = agreement_weights(k, weighting)
    total = cm.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = cm / np.where(total > 0, total, 1.0)[:, None, None]
        r, c = p.sum(axis=2), p.sum(axis=1)
        po = np.einsum("ij,bij->b", w, p)
        pe = np.einsum("ij,bi,bj->b", w, r, c)
        out = np.where(
            (total > 0) & (pe < 1.0), (po - pe) / np.where(pe < 1.0, 1.0 - pe, 1.0), np.nan
        )
    return np.asarray(out, dtype=np.float64)


def multiclass_stats(
    w: FloatArray,
    design: FloatArray,
    k: int,
    weightings: Sequence[Weighting],
    sorted_scores: Sequence[SortedScores | None] = (),
) -> dict[str, FloatArray]:
    """Replicates of accuracy, ``kappa:<weighting>`` and per-class ``<i>:<metric>``."""
    # float32 counts are exact up to 2**24 draws; the statistics are computed in float64
    cm = (w.astype(np.float32) @ design.astype(np.float32)).astype(np.float64).reshape(-1, k, k)
    total = cm.sum(axis=(1, 2))
    diag = np.einsum("bii->bi", cm)
    out: dict[str, FloatArray] = {"accuracy": ratio(diag.sum(axis=1), total)}
    for weighting in weightings:
        out[f"kappa:{weighting}"] = kappa_from_confusion(cm, weighting)
    ref, predicted = cm.sum(axis=2), cm.sum(axis=1)
    for i in range(k):
        tp = diag[:, i]
        fn, fp = ref[:, i] - tp, predicted[:, i] - tp
        tn = total - tp - fn - fp
        out[f"{i}:sensitivity"] = ratio(tp, tp + fn)
        out[f"{i}:specificity"] = ratio(tn, tn + fp)
        out[f"{i}:ppv"] = ratio(tp, tp + fp)
        out[f"{i}:npv"] = ratio(tn, tn + fn)
    for i, ss in enumerate(sorted_scores):
        if ss is not None:
            out[f"{i}:auc"] = weighted_auc(w, ss)
    return out


def clustered_bootstrap(
    t: IntArray,
    p: IntArray,
    k: int,
    clusters: Any,
    *,
    weightings: Sequence[Weighting],
    probabilities: FloatArray | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> BootstrapRun:
    """Patient-clustered bootstrap of the multiclass statistics (whole patients are drawn)."""
    design = confusion_design(t, p, k)
    sorted_scores: list[SortedScores | None] = []
    if probabilities is not None:
        for i in range(k):
            ref = (t == i).astype(np.int64)
            ok = 0 < ref.sum() < t.size
            sorted_scores.append(SortedScores.build(ref, probabilities[:, i]) if ok else None)

    def stat_fn(w: FloatArray) -> dict[str, FloatArray]:
        return multiclass_stats(w, design, k, weightings, sorted_scores)

    return run_bootstrap(stat_fn, t.size, n_boot=n_boot, seed=seed, clusters=clusters)


def paired_bootstrap(
    t: IntArray,
    pred_a: IntArray,
    pred_b: IntArray,
    probs_a: FloatArray,
    probs_b: FloatArray,
    k: int,
    weighting: Weighting,
    *,
    clusters: Any | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> BootstrapRun:
    """Bootstrap of the paired differences a - b: ``accuracy_diff``, ``kappa_diff`` and
    ``<i>:auc_diff`` (case resampling, or patient-clustered when ``clusters`` is given)."""
    designs = (confusion_design(t, pred_a, k), confusion_design(t, pred_b, k))
    scores: list[list[SortedScores | None]] = []
    for probs in (probs_a, probs_b):
        per = []
        for i in range(k):
            ref = (t == i).astype(np.int64)
            per.append(SortedScores.build(ref, probs[:, i]) if 0 < ref.sum() < t.size else None)
        scores.append(per)

    def stat_fn(w: FloatArray) -> dict[str, FloatArray]:
        a, b = (
            multiclass_stats(w, d, k, [weighting], s) for d, s in zip(designs, scores, strict=True)
        )
        out: dict[str, FloatArray] = {
            "accuracy_diff": a["accuracy"] - b["accuracy"],
            "kappa_diff": a[f"kappa:{weighting}"] - b[f"kappa:{weighting}"],
        }
        for i in range(k):
            if f"{i}:auc" in a:
                out[f"{i}:auc_diff"] = a[f"{i}:auc"] - b[f"{i}:auc"]
        return out

    return run_bootstrap(stat_fn, t.size, n_boot=n_boot, seed=seed, clusters=clusters)
