"""Seeded bootstrap via resampling weights: plain, class-stratified or patient-clustered.

A bootstrap replicate is represented by a weight per case (how often the case was drawn), so
every statistic is a weighted statistic computed for many replicates at once in numpy. This
makes 2,000 replicates of AUC, sensitivity, specificity, F1 and Brier on 10,000 cases cost a
few hundred milliseconds. With clusters (several images per patient), whole patients are drawn
and each case inherits its patient's count (Field & Welsh 2007 "cluster bootstrap").

Intervals: percentile, or BCa (Efron 1987) with the acceleration estimated by a grouped
jackknife over at most ``JACKKNIFE_GROUPS`` groups of resampling units (cases or patients).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from pair.core.errors import Invalid
from pair.evaluation.stats.arrays import FloatArray, IntArray

CHUNK = 256
JACKKNIFE_GROUPS = 100
Method = Literal["percentile", "bca"]
StatFn = Callable[[FloatArray], dict[str, FloatArray]]


def patients_repeat(clusters: Any) -> bool:
    """Whether some patient has several cases: the one rule by which evaluation runs (both
    tasks) switch to the patient-clustered bootstrap. ``evaluate_scores`` itself clusters
    whenever it is given ``clusters`` (the CLI's explicit ``--cluster``)."""
    ids = np.asarray(clusters, dtype=object).astype(str)
    return int(np.unique(ids).size) < ids.size


def _units(n: int, clusters: Any | None) -> tuple[IntArray, int]:
    """Map each case to its resampling unit (itself, or its cluster)."""
    if clusters is None:
        return np.arange(n, dtype=np.int64), n
    c = np.asarray(clusters)
    if c.ndim != 1 or c.size != n:
        raise Invalid(f"clusters must be one-dimensional with {n} values, got shape {c.shape}")
    _, inverse = np.unique(c, return_inverse=True)
    return inverse.astype(np.int64), int(inverse.max()) + 1


def _draw_counts(rng: np.random.Generator, b: int, k: int) -> FloatArray:
    """(b, k) counts of k draws with replacement from k units (multinomial, equal p)."""
    idx = rng.integers(0, k, size=(b, k))
    flat = (np.arange(b, dtype=np.int64)[:, None] * k + idx).ravel()
    return np.bincount(flat, minlength=b * k).reshape(b, k).astype(np.float32)


def bootstrap_weights(
    n: int,
    n_boot: int,
    rng: np.random.Generator,
    *,
    strata: IntArray | None = None,
    clusters: Any | None = None,
) -> Iterator[FloatArray]:
    """Yield (chunk, n) weight matrices; strata are ignored when clusters are given."""
    unit_of_case, n_units = _units(n, clusters)
    groups = [] if strata is None else [np.nonzero(strata == s)[0] for s in np.unique(strata)]
    done = 0
    while done < n_boot:
        b = min(CHUNK, n_boot - done)
        if clusters is not None:
            yield _draw_counts(rng, b, n_units)[:, unit_of_case]
        elif strata is not None:
            # Draw within each stratum, then count all draws of a resample in one bincount.
            cases = np.concatenate(
                [idx[rng.integers(0, idx.size, size=(b, idx.size))] for idx in groups], axis=1
            )
            flat = (np.arange(b, dtype=np.int64)[:, None] * n + cases).ravel()
            yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float32)
        else:
            yield _draw_counts(rng, b, n)
        done += b


def jackknife_weights(n: int, rng: np.random.Generator, clusters: Any | None = None) -> FloatArray:
    """(G, n) weights, each leaving one group of units out (grouped jackknife)."""
    unit_of_case, n_units = _units(n, clusters)
    g = min(n_units, JACKKNIFE_GROUPS)
    group_of_unit = rng.permutation(np.arange(n_units) % g)
    group_of_case = group_of_unit[unit_of_case]
    return (group_of_case[None, :] != np.arange(g)[:, None]).astype(np.float64)


@dataclass(frozen=True)
class BootInterval:
    lower: float
    upper: float
    method: str
    n_boot: int
    n_valid: int


def percentile_interval(boot: FloatArray, level: float) -> tuple[float, float]:
    ok = boot[np.isfinite(boot)]
    if ok.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    lo, hi = np.quantile(ok, [a, 1 - a])
    return (float(lo), float(hi))


def bca_interval(
    boot: FloatArray, estimate: float, jack: FloatArray, level: float
) -> tuple[float, float]:
    """Bias-corrected and accelerated interval; falls back to percentile when degenerate."""
    ok = boot[np.isfinite(boot)]
    jk = jack[np.isfinite(jack)]
    if ok.size == 0 or not np.isfinite(estimate):
        return (float("nan"), float("nan"))
    prop = (np.sum(ok < estimate) + 0.5 * np.sum(ok == estimate)) / ok.size
    if prop <= 0.0 or prop >= 1.0:
        return percentile_interval(ok, level)
    z0 = float(sps.norm.ppf(prop))
    d = jk.mean() - jk if jk.size else np.zeros(1)
    denom = 6.0 * float(np.sum(d**2)) ** 1.5
    acc = float(np.sum(d**3)) / denom if denom > 0 else 0.0
    alphas = []
    for q in ((1 - level) / 2, 1 - (1 - level) / 2):
        zq = float(sps.norm.ppf(q))
        alphas.append(float(sps.norm.cdf(z0 + (z0 + zq) / (1 - acc * (z0 + zq)))))
    lo, hi = np.quantile(ok, alphas)
    return (float(lo), float(hi))


@dataclass(frozen=True)
class BootstrapRun:
    """Replicates of several statistics computed on the same resamples."""

    replicates: dict[str, FloatArray]
    jackknife: dict[str, FloatArray] | None
    n_boot: int
    clustered: bool

    def interval(self, name: str, estimate: float, level: float, method: Method) -> BootInterval:
        boot = self.replicates[name]
        if method == "bca":
            if self.jackknife is None:
                raise Invalid("BCa intervals need the jackknife; run the bootstrap with bca=True")
            lo, hi = bca_interval(boot, estimate, self.jackknife[name], level)
        else:
            lo, hi = percentile_interval(boot, level)
        label = f"{'cluster ' if self.clustered else ''}bootstrap {method}"
        return BootInterval(lo, hi, label, self.n_boot, int(np.isfinite(boot).sum()))


def run_bootstrap(
    stat_fn: StatFn,
    n: int,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    strata: IntArray | None = None,
    clusters: Any | None = None,
    bca: bool = False,
) -> BootstrapRun:
    """Evaluate ``stat_fn`` (weights -> named arrays) on seeded resamples (and the jackknife)."""
    if n_boot < 50:
        raise Invalid(f"n_boot must be at least 50 for a usable interval, got {n_boot}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[FloatArray]] = {}
    for w in bootstrap_weights(n, n_boot, rng, strata=strata, clusters=clusters):
        for name, values in stat_fn(w).items():
            parts.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
    reps = {k: np.concatenate(v) for k, v in parts.items()}
    jack: dict[str, FloatArray] | None = None
    if bca:
        jack = {
            k: np.asarray(v, dtype=np.float64)
            for k, v in stat_fn(jackknife_weights(n, rng, clusters)).items()
        }
    return BootstrapRun(reps, jack, n_boot, clusters is not None)
