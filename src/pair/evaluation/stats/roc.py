"""ROC analysis: AUC with DeLong variance (fast midrank algorithm), ROC points, operating points.

DeLong, DeLong & Clarke-Pearson (1988) give the nonparametric covariance of correlated AUCs as
U-statistics; Sun & Xu (2014) compute the same structural components from midranks in
O(n log n) instead of O(m n). The score convention throughout PAIR: higher score = more likely
positive, and a case is called positive when ``score >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from pair.core.errors import Invalid
from pair.evaluation.stats.arrays import (
    FloatArray,
    IntArray,
    as_labels,
    as_scores,
    check_level,
    require_both_classes,
)


@dataclass(frozen=True)
class DeLongResult:
    """AUCs of k score sets on the same cases and their DeLong covariance matrix (k x k)."""

    aucs: FloatArray
    covariance: FloatArray
    n_positive: int
    n_negative: int


def _midranks(x: FloatArray) -> FloatArray:
    """Midranks (ties share the mean rank) along the last axis."""
    return np.asarray(sps.rankdata(x, method="average", axis=-1), dtype=np.float64)


def fast_delong(y_true: Any, scores: Any) -> DeLongResult:
    """DeLong AUCs and covariance for one (n,) or several (k, n) score sets via midranks.

    Structural components (Sun & Xu 2014): V10_i = (Tz_i - Tx_i) / n for positives and
    V01_j = 1 - (Tz_j - Ty_j) / m for negatives; covariance S10 / m + S01 / n.
    """
    y = as_labels(y_true)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.size:
        raise Invalid(f"scores must have {y.size} columns (one per case), got shape {s.shape}")
    for row in s:
        as_scores(row, y.size)
    require_both_classes(y, "AUC")
    pos = y == 1
    x, yn = s[:, pos], s[:, ~pos]
    m, n = x.shape[1], yn.shape[1]
    tx, ty = _midranks(x), _midranks(yn)
    tz = _midranks(np.concatenate([x, yn], axis=1))
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((s.shape[0], s.shape[0]))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((s.shape[0], s.shape[0]))
    return DeLongResult(aucs=aucs, covariance=s10 / m + s01 / n, n_positive=m, n_negative=n)


def auc(y_true: Any, scores: Any) -> float:
    """Empirical AUC (Mann-Whitney; ties count one half)."""
    return float(fast_delong(y_true, scores).aucs[0])


@dataclass(frozen=True)
class AucCI:
    auc: float
    se: float
    lower: float
    upper: float
    method: str


def auc_ci_delong(y_true: Any, scores: Any, level: float = 0.95) -> AucCI:
    """AUC with a normal-theory CI from the DeLong variance, clipped to [0, 1] (as pROC does)."""
    check_level(level)
    res = fast_delong(y_true, scores)
    a = float(res.aucs[0])
    se = float(np.sqrt(max(res.covariance[0, 0], 0.0)))
    z = float(sps.norm.ppf(0.5 + level / 2.0))
    return AucCI(a, se, max(0.0, a - z * se), min(1.0, a + z * se), "delong")


def hanley_mcneil_se(auc_value: float, n_positive: int, n_negative: int) -> float:
    """Hanley & McNeil (1982) standard error from the exponential approximation of Q1, Q2."""
    a = float(auc_value)
    q1 = a / (2.0 - a)
    q2 = 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n_positive - 1) * (q1 - a * a) + (n_negative - 1) * (q2 - a * a)) / (
        n_positive * n_negative
    )
    return float(np.sqrt(var))


@dataclass(frozen=True)
class RocCurve:
    """Empirical ROC points, one per distinct threshold (plus the (0, 0) start)."""

    fpr: FloatArray
    tpr: FloatArray
    thresholds: FloatArray  # thresholds[0] = +inf: nothing called positive


def roc_curve(y_true: Any, scores: Any) -> RocCurve:
    """ROC points for ``score >= t`` at every distinct score t, highest first."""
    y = as_labels(y_true)
    s = as_scores(scores, y.size)
    require_both_classes(y, "ROC curve")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last_of_group]
    fp = (last_of_group + 1) - tp
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    return RocCurve(
        fpr=np.r_[0.0, fp / n_neg],
        tpr=np.r_[0.0, tp / n_pos],
        thresholds=np.r_[np.inf, s_sorted[last_of_group]],
    )


def youden_threshold(y_true: Any, scores: Any) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (first maximum)."""
    curve = roc_curve(y_true, scores)
    j = curve.tpr - curve.fpr
    k = int(np.argmax(j[1:])) + 1
    return float(curve.thresholds[k])


def threshold_for_sensitivity(y_true: Any, scores: Any, target: float) -> float:
    """Highest threshold whose sensitivity reaches ``target`` (best specificity given target)."""
    if not 0.0 < target <= 1.0:
        raise Invalid(f"target sensitivity must be in (0, 1], got {target}")
    curve = roc_curve(y_true, scores)
    ok = np.nonzero(curve.tpr >= target - 1e-12)[0]
    return float(curve.thresholds[int(ok[0])])


def interpolate_tpr(fpr: FloatArray, tpr: FloatArray, grid: FloatArray) -> FloatArray:
    """Sensitivity at each grid FPR: the best TPR reachable without exceeding that FPR."""
    idx = np.searchsorted(fpr, grid, side="right") - 1
    return tpr[np.clip(idx, 0, tpr.size - 1)]


def labels_and_scores(y_true: Any, scores: Any) -> tuple[IntArray, FloatArray]:
    """Validated pair, for callers that need both."""
    y = as_labels(y_true)
    return y, as_scores(scores, y.size)


def threshold_for_specificity(y_true: Any, scores: Any, target: float) -> float:
    """Lowest threshold whose specificity reaches ``target`` (best sensitivity given target).

    When even the highest score gives too many false positives, a threshold just above it
    (nothing called positive, specificity 1) is returned."""
    if not 0.0 < target <= 1.0:
        raise Invalid(f"target specificity must be in (0, 1], got {target}")
    curve = roc_curve(y_true, scores)
    ok = np.nonzero(1.0 - curve.fpr >= target - 1e-12)[0]
    k = int(ok[-1])
    if k == 0:
        return float(np.nextafter(curve.thresholds[1], np.inf))
    return float(curve.thresholds[k])
