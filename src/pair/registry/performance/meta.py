"""Random-effects meta-analysis (DerSimonian & Laird 1986) of per-site estimates.

Works on whatever scale the estimates are given (the registry passes logits for proportions and
AUC, raw values for kappa; ``metrics.py``). Checked against metafor's ``rma(method="DL")`` on the
BCG trials (tests/registry/performance/test_perf_meta.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import chi2, norm

from pair.core.errors import Invalid


@dataclass(frozen=True)
class Pooled:
    k: int
    estimate: float
    se: float
    lower: float
    upper: float
    tau2: float
    q: float
    df: int
    q_p_value: float | None
    i2: float  # percent; 0 when Q <= df
    level: float


def dersimonian_laird(
    estimates: Sequence[float], variances: Sequence[float], level: float = 0.95
) -> Pooled:
    """Pooled estimate with its Wald CI, tau^2 (method of moments, truncated at 0), Cochran's Q
    with its chi-square p-value, and I^2 = max(0, (Q - df) / Q) in percent."""
    k = len(estimates)
    if k == 0 or k != len(variances):
        raise Invalid("pooling needs one variance per estimate and at least one estimate")
    if any(v <= 0 or not math.isfinite(v) for v in variances):
        raise Invalid("every variance must be positive and finite")
    w = [1 / v for v in variances]
    sw = sum(w)
    fixed = sum(wi * yi for wi, yi in zip(w, estimates, strict=True)) / sw
    q = sum(wi * (yi - fixed) ** 2 for wi, yi in zip(w, estimates, strict=True))
    df = k - 1
    c = sw - sum(wi * wi for wi in w) / sw
    tau2 = max(0.0, (q - df) / c) if df > 0 and c > 0 else 0.0
    w_star = [1 / (v + tau2) for v in variances]
    sws = sum(w_star)
    mu = sum(wi * yi for wi, yi in zip(w_star, estimates, strict=True)) / sws
    se = math.sqrt(1 / sws)
    z = float(norm.ppf(0.5 + level / 2))
    i2 = 100 * max(0.0, (q - df) / q) if df > 0 and q > 0 else 0.0
    p = float(chi2.sf(q, df)) if df > 0 else None
    return Pooled(k, mu, se, mu - z * se, mu + z * se, tau2, q, df, p, i2, level)
