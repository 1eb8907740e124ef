"""Calibration of predicted probabilities: Brier score, ECE, logistic recalibration, bins.

Van Calster et al. (2016, 2019) "calibration hierarchy": calibration-in-the-large (intercept
with the slope fixed at 1, i.e. logit(p) as an offset), weak calibration (intercept and slope of
the logistic recalibration model y ~ a + b logit(p)), and the reliability diagram. ECE depends
on the binning, so the binning is always reported with it. Bins are right-closed (lo, hi] with
the first bin including its lower edge, the convention of sklearn's ``calibration_curve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from pair.core.errors import Invalid
from pair.evaluation.stats.arrays import (
    FloatArray,
    IntArray,
    as_labels,
    as_probabilities,
    check_level,
)
from pair.evaluation.stats.proportions import wilson_ci

LOGIT_EPS = 1e-6  # probabilities are clipped to [eps, 1 - eps] before taking logits
Binning = Literal["uniform", "quantile"]


def brier_score(y_true: Any, p: Any) -> float:
    """Mean squared difference between predicted probability and outcome."""
    y = as_labels(y_true)
    prob = as_probabilities(p, y.size)
    return float(np.mean((prob - y) ** 2))


def logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def _bin_ids(p: FloatArray, n_bins: int, binning: Binning) -> tuple[IntArray, FloatArray]:
    if n_bins < 1:
        raise Invalid(f"n_bins must be at least 1, got {n_bins}")
    if binning == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif binning == "quantile":
        edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    else:
        raise Invalid(f"binning must be 'uniform' or 'quantile', got {binning!r}")
    return np.searchsorted(edges[1:-1], p).astype(np.int64), edges


@dataclass(frozen=True)
class ReliabilityBin:
    lower_edge: float
    upper_edge: float
    n: int
    mean_predicted: float
    observed: float
    observed_lower: float
    observed_upper: float


@dataclass(frozen=True)
class Reliability:
    binning: str
    n_bins: int
    ece: float
    mce: float
    bins: list[ReliabilityBin]


def reliability(
    y_true: Any, p: Any, n_bins: int = 10, binning: Binning = "uniform", level: float = 0.95
) -> Reliability:
    """Reliability-diagram bins (with Wilson CIs of the observed rate), ECE and MCE.

    ECE = sum_b (n_b / n) |observed_b - mean_predicted_b| over non-empty bins.
    """
    y = as_labels(y_true)
    prob = as_probabilities(p, y.size)
    if y.size == 0:
        raise Invalid("calibration needs at least one case")
    ids, edges = _bin_ids(prob, n_bins, binning)
    count = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=prob, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y.astype(np.float64), minlength=n_bins)
    bins: list[ReliabilityBin] = []
    ece, mce = 0.0, 0.0
    for b in range(n_bins):
        if count[b] == 0:
            continue
        mp, obs = sum_p[b] / count[b], sum_y[b] / count[b]
        lo, hi = wilson_ci(round(float(sum_y[b])), int(count[b]), level)
        bins.append(
            ReliabilityBin(
                float(edges[b]), float(edges[b + 1]), int(count[b]), float(mp), float(obs), lo, hi
            )
        )
        gap = abs(obs - mp)
        ece += count[b] / y.size * gap
        mce = max(mce, gap)
    return Reliability(binning, n_bins, float(ece), float(mce), bins)


def expected_calibration_error(
    y_true: Any, p: Any, n_bins: int = 10, binning: Binning = "uniform"
) -> float:
    return reliability(y_true, p, n_bins, binning).ece


@dataclass(frozen=True)
class LogisticFit:
    coef: FloatArray
    covariance: FloatArray
    converged: bool
    iterations: int


def fit_logistic(
    x: FloatArray, y: FloatArray, offset: FloatArray | None = None, max_iter: int = 100
) -> LogisticFit:
    """Unpenalised logistic regression by Newton-Raphson (IRLS); x includes the intercept."""
    beta = np.zeros(x.shape[1])
    off = np.zeros(y.size) if offset is None else offset
    converged = False
    it = 0
    info = np.eye(x.shape[1])
    for it in range(1, max_iter + 1):  # noqa: B007 - iteration count is reported
        eta = np.clip(x @ beta + off, -35.0, 35.0)
        mu = 1.0 / (1.0 + np.exp(-eta))
        wt = mu * (1.0 - mu)
        info = x.T @ (x * wt[:, None])
        grad = x.T @ (y - mu)
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            converged = True
            break
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        cov = np.full(info.shape, np.nan)
    return LogisticFit(beta, cov, converged, it)


@dataclass(frozen=True)
class Coefficient:
    value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Recalibration:
    """Calibration intercept/slope (y ~ a + b logit p) and calibration-in-the-large."""

    slope: Coefficient
    intercept: Coefficient
    calibration_in_the_large: Coefficient
    converged: bool


def logistic_calibration(y_true: Any, p: Any, level: float = 0.95) -> Recalibration:
    """Wald CIs from the observed information; ideal values are slope 1 and intercepts 0."""
    check_level(level)
    y = as_labels(y_true)
    prob = as_probabilities(p, y.size)
    if y.sum() == 0 or y.sum() == y.size:
        raise Invalid("calibration slope needs both positive and negative cases")
    lp = logit(prob)
    z = float(sps.norm.ppf(0.5 + level / 2))
    yf = y.astype(np.float64)
    full = fit_logistic(np.column_stack([np.ones(y.size), lp]), yf)
    citl = fit_logistic(np.ones((y.size, 1)), yf, offset=lp)

    def coef(fit: LogisticFit, k: int) -> Coefficient:
        v, se = float(fit.coef[k]), float(np.sqrt(max(fit.covariance[k, k], 0.0)))
        return Coefficient(v, v - z * se, v + z * se)

    return Recalibration(
        slope=coef(full, 1),
        intercept=coef(full, 0),
        calibration_in_the_large=coef(citl, 0),
        converged=full.converged and citl.converged,
    )
