"""Paired comparison of two score sets on the same cases.

- AUCs: DeLong et al. (1988) test for correlated ROC curves, using the fast covariance.
- Decisions at thresholds: McNemar's test on the discordant pairs, separately among the
  reference-positive cases (sensitivity) and reference-negative cases (specificity). The exact
  binomial (mid-point free, two-sided) version is used when the discordant count is below
  ``MCNEMAR_EXACT_BELOW``; otherwise the chi-square statistic with continuity correction
  (Edwards 1948), chi2 = (|b - c| - 1)^2 / (b + c) on 1 df.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from pair.core.errors import Invalid
from pair.evaluation.stats.arrays import as_labels, as_scores, check_level
from pair.evaluation.stats.roc import fast_delong

MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class DeLongTest:
    auc_a: float
    auc_b: float
    difference: float
    se: float
    lower: float
    upper: float
    z: float
    p_value: float
    correlation: float


def delong_test(y_true: Any, scores_a: Any, scores_b: Any, level: float = 0.95) -> DeLongTest:
    """Test H0: AUC_a == AUC_b for two scores on the same cases (difference = a - b)."""
    check_level(level)
    y = as_labels(y_true)
    a, b = as_scores(scores_a, y.size, "scores_a"), as_scores(scores_b, y.size, "scores_b")
    res = fast_delong(y, np.vstack([a, b]))
    s = res.covariance
    diff = float(res.aucs[0] - res.aucs[1])
    var = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    zq = float(sps.norm.ppf(0.5 + level / 2))
    if se > 0:
        z = diff / se
        p = float(2 * sps.norm.sf(abs(z)))
    else:  # identical rankings: no evidence of a difference
        z, p = 0.0, 1.0
    denom = np.sqrt(s[0, 0] * s[1, 1])
    corr = float(s[0, 1] / denom) if denom > 0 else float("nan")
    return DeLongTest(
        float(res.aucs[0]),
        float(res.aucs[1]),
        diff,
        se,
        diff - zq * se,
        diff + zq * se,
        float(z),
        p,
        corr,
    )


@dataclass(frozen=True)
class McNemar:
    """b = cases where only A is correct, c = cases where only B is correct."""

    b: int
    c: int
    statistic: float
    p_value: float
    method: str


def mcnemar(b: int, c: int) -> McNemar:
    if b < 0 or c < 0:
        raise Invalid(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return McNemar(b, c, 0.0, 1.0, "no discordant pairs")
    if n < MCNEMAR_EXACT_BELOW:
        p = float(sps.binomtest(b, n, 0.5).pvalue)
        return McNemar(b, c, float(min(b, c)), p, "exact binomial")
    stat = (abs(b - c) - 1.0) ** 2 / n
    return McNemar(b, c, float(stat), float(sps.chi2.sf(stat, 1)), "chi-square, continuity")


def clustered_mcnemar_warning(n_tests: int) -> str:
    """The one caveat for paired comparisons on patient-clustered data (binary: two tests,
    sensitivity and specificity; multiclass: one, accuracy): the other differences use the
    clustered bootstrap, McNemar does not."""
    if n_tests == 1:
        return (
            "The paired differences use the patient-clustered bootstrap, but McNemar's "
            "test assumes independent cases; its p-value is too small."
        )
    return (
        "The paired differences use the patient-clustered bootstrap, but McNemar's "
        "tests assume independent cases; their p-values are too small."
    )


@dataclass(frozen=True)
class PairedDecisions:
    threshold_a: float
    threshold_b: float
    sensitivity_a: float
    sensitivity_b: float
    specificity_a: float
    specificity_b: float
    sensitivity_test: McNemar
    specificity_test: McNemar


def paired_decisions(
    y_true: Any, scores_a: Any, threshold_a: float, scores_b: Any, threshold_b: float
) -> PairedDecisions:
    """McNemar tests for sensitivity (among positives) and specificity (among negatives)."""
    y = as_labels(y_true)
    pa = as_scores(scores_a, y.size, "scores_a") >= threshold_a
    pb = as_scores(scores_b, y.size, "scores_b") >= threshold_b
    pos = y == 1
    ca, cb = pa == pos, pb == pos  # correct decisions

    def disc(mask: np.ndarray) -> McNemar:
        return mcnemar(int(np.sum(ca & ~cb & mask)), int(np.sum(~ca & cb & mask)))

    def rate(correct: np.ndarray, mask: np.ndarray) -> float:
        return float(correct[mask].mean()) if mask.any() else float("nan")

    return PairedDecisions(
        float(threshold_a),
        float(threshold_b),
        rate(ca, pos),
        rate(cb, pos),
        rate(ca, ~pos),
        rate(cb, ~pos),
        disc(pos),
        disc(~pos),
    )
