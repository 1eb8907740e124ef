"""Drift of one site's performance over periods: a one-sided lower CUSUM against the use case's
minimum acceptable performance, plus the plain per-period threshold check.

Parameterisation (Page 1954, tabular form, standardised): for period t with estimate y_t and
standard error s_t on the metric's pooling scale and the minimum m on the same scale,

    z_t = (y_t - m) / s_t,    C_0 = 0,    C_t = max(0, C_{t-1} - z_t - k)

and an alert is raised in every period where C_t > h. The in-control state is "at or above the
minimum"; at exactly the minimum (z ~ N(0, 1)) k = 0.5 and h = 4 give an average run length of
about 168 periods before a false alert, and a site one standard error below the minimum is
flagged after about 8 periods on average (Montgomery, Introduction to Statistical Quality
Control, table 9.3 and section 9.1.3: ARL0 168, ARL1 8.38 for a 1-sigma shift). ``k`` and ``h`` are
``PAIR_PERF_CUSUM_K`` and ``PAIR_PERF_CUSUM_H``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CusumPoint:
    z: float
    statistic: float
    alarm: bool


def lower_cusum(
    estimates: Sequence[float],
    ses: Sequence[float],
    minimum: float,
    k: float = 0.5,
    h: float = 4.0,
) -> list[CusumPoint]:
    """The lower CUSUM of ``estimates`` (with standard errors ``ses``) against ``minimum``, all
    on the same scale; the statistic keeps accumulating after an alarm (no reset) so that the
    chart shows how long the site stays below."""
    out: list[CusumPoint] = []
    c = 0.0
    for y, s in zip(estimates, ses, strict=True):
        z = (y - minimum) / s if s > 0 and math.isfinite(s) else 0.0
        c = max(0.0, c - z - k)
        out.append(CusumPoint(z, c, c > h))
    return out


def below_minimum(value: float, lower: float | None, minimum: float, bound: str) -> bool:
    """The use case's own rule: ``bound`` "point" compares the point estimate, "ci_lower"
    (the default of evaluation plans) the lower confidence bound."""
    if bound == "point" or lower is None:
        return value < minimum
    return lower < minimum
