"""Proportions at a threshold: confusion matrix, Wilson score CIs, PPV/NPV at a given prevalence.

Wilson (1927) score interval, recommended by Newcombe (1998) over the Wald interval.
PPV/NPV at a user-given prevalence follow Bayes' theorem from sensitivity and specificity; the CI
is the logit interval of Mercaldo, Lau & Zhou (2007, Stat Med 26:2170-2183), which propagates the
sampling variance of sensitivity and specificity (the prevalence is taken as known):
  logit PPV = logit(p) + log Se - log(1 - Sp),
  Var = (1 - Se) / (n1 Se) + Sp / (n0 (1 - Sp)),
and symmetrically for NPV. When a cell is zero, Se and Sp are replaced by the adjusted
estimates (x + z^2/2) / (n + z^2) (Mercaldo's "adjusted logit" interval).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from pair.core.errors import Invalid
from pair.evaluation.stats.arrays import as_labels, as_scores, check_level


def _z(level: float) -> float:
    return float(sps.norm.ppf(0.5 + check_level(level) / 2.0))


def wilson_ci(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for successes/trials; (nan, nan) when trials == 0."""
    if successes < 0 or trials < 0 or successes > trials:
        raise Invalid(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return (float("nan"), float("nan"))
    z = _z(level)
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == trials else min(1.0, centre + half)
    return (float(lower), float(upper))


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn


def confusion_at(y_true: Any, scores: Any, threshold: float) -> Confusion:
    """Counts with the PAIR convention: predicted positive when score >= threshold."""
    y = as_labels(y_true)
    s = as_scores(scores, y.size)
    pred = s >= threshold
    pos = y == 1
    return Confusion(
        tp=int(np.sum(pred & pos)),
        fp=int(np.sum(pred & ~pos)),
        tn=int(np.sum(~pred & ~pos)),
        fn=int(np.sum(~pred & pos)),
    )


@dataclass(frozen=True)
class Proportion:
    value: float
    lower: float
    upper: float
    numerator: int
    denominator: int


def proportion(successes: int, trials: int, level: float = 0.95) -> Proportion:
    value = successes / trials if trials else float("nan")
    lo, hi = wilson_ci(successes, trials, level)
    return Proportion(float(value), lo, hi, successes, trials)


@dataclass(frozen=True)
class BinaryMetrics:
    """Threshold metrics with Wilson CIs (F1 has no closed form; see the bootstrap module)."""

    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    accuracy: Proportion
    f1: float


def binary_metrics(c: Confusion, level: float = 0.95) -> BinaryMetrics:
    f1_den = 2 * c.tp + c.fp + c.fn
    return BinaryMetrics(
        sensitivity=proportion(c.tp, c.tp + c.fn, level),
        specificity=proportion(c.tn, c.tn + c.fp, level),
        ppv=proportion(c.tp, c.tp + c.fp, level),
        npv=proportion(c.tn, c.tn + c.fn, level),
        accuracy=proportion(c.tp + c.tn, c.n, level),
        f1=float(2 * c.tp / f1_den) if f1_den else float("nan"),
    )


@dataclass(frozen=True)
class PredictiveValue:
    value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class PredictiveValues:
    prevalence: float
    ppv: PredictiveValue
    npv: PredictiveValue
    method: str = "mercaldo-logit"


def _expit(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def predictive_values_at_prevalence(
    c: Confusion, prevalence: float, level: float = 0.95
) -> PredictiveValues:
    """PPV and NPV at ``prevalence`` (Bayes) with the Mercaldo et al. (2007) logit interval."""
    if not 0.0 < prevalence < 1.0:
        raise Invalid(f"prevalence must be strictly between 0 and 1, got {prevalence}")
    n1, n0 = c.tp + c.fn, c.tn + c.fp
    if n1 == 0 or n0 == 0:
        raise Invalid("PPV/NPV at a prevalence need both positive and negative reference cases")
    se, sp = c.tp / n1, c.tn / n0
    ppv = se * prevalence / (se * prevalence + (1 - sp) * (1 - prevalence))
    npv = sp * (1 - prevalence) / (sp * (1 - prevalence) + (1 - se) * prevalence)
    z = _z(level)
    zero_cell = min(c.tp, c.fn, c.tn, c.fp) == 0
    if zero_cell:
        se_a = (c.tp + z * z / 2) / (n1 + z * z)
        sp_a = (c.tn + z * z / 2) / (n0 + z * z)
        m1, m0 = n1 + z * z, n0 + z * z
    else:
        se_a, sp_a, m1, m0 = se, sp, float(n1), float(n0)
    logit_prev = np.log(prevalence / (1 - prevalence))
    lp = logit_prev + np.log(se_a) - np.log(1 - sp_a)
    vp = (1 - se_a) / (m1 * se_a) + sp_a / (m0 * (1 - sp_a))
    ln = -logit_prev + np.log(sp_a) - np.log(1 - se_a)
    vn = (1 - sp_a) / (m0 * sp_a) + se_a / (m1 * (1 - se_a))
    return PredictiveValues(
        prevalence=float(prevalence),
        ppv=PredictiveValue(float(ppv), _expit(lp - z * np.sqrt(vp)), _expit(lp + z * np.sqrt(vp))),
        npv=PredictiveValue(float(npv), _expit(ln - z * np.sqrt(vn)), _expit(ln + z * np.sqrt(vn))),
        method="mercaldo-adjusted-logit" if zero_cell else "mercaldo-logit",
    )
