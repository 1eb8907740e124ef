"""Which metrics the registry keeps from a feedback payload, with their CIs and counts, and the
scale each is pooled on (``data/metrics.yaml``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from pair.core.errors import Invalid

EPS = 1e-6  # bounds of exactly 0 or 1 are moved this far inside before the logit


@dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    scale: str  # "logit" or "identity"


@dataclass(frozen=True)
class Reading:
    """One metric of one feedback: estimate, interval, level, counts when known."""

    metric: str
    value: float
    lower: float | None
    upper: float | None
    level: float
    n: int | None = None
    events: int | None = None


@cache
def specs() -> dict[str, MetricSpec]:
    text = (
        resources.files("pair.registry.performance")
        .joinpath("data/metrics.yaml")
        .read_text(encoding="utf-8")
    )
    data: dict[str, dict[str, str]] = yaml.safe_load(text)
    return {k: MetricSpec(k, v["label"], v["scale"]) for k, v in data.items()}


def spec(metric: str) -> MetricSpec:
    try:
        return specs()[metric]
    except KeyError:
        raise Invalid(f"unknown metric {metric!r}; known: {', '.join(specs())}") from None


def _operating_point(payload: dict[str, Any]) -> dict[str, Any] | None:
    ops = {op["name"]: op for op in payload.get("operating_points") or []}
    for name in ("target_sensitivity", "manifest"):
        if name in ops:
            return ops[name]
    return next(iter(ops.values()), None)


def _reading(
    metric: str, est: dict[str, Any] | None, level: float, n: int | None, x: int | None
) -> Reading | None:
    if not est or est.get("value") is None or not math.isfinite(float(est["value"])):
        return None
    lower, upper = est.get("lower"), est.get("upper")
    return Reading(
        metric,
        float(est["value"]),
        None if lower is None else float(lower),
        None if upper is None else float(upper),
        level,
        n,
        x,
    )


def readings(payload: dict[str, Any]) -> list[Reading]:
    """The registry's metrics of one (schema-valid) payload."""
    level = float((payload.get("statistics") or {}).get("level", 0.95))
    cohort = payload["cohort"]
    found: list[Reading | None] = []
    if payload.get("output_kind", "binary") == "multiclass":
        mc = payload.get("multiclass") or {}
        n = int(cohort["n_cases"])
        acc = mc.get("accuracy")
        hits = None if not acc or acc.get("value") is None else round(acc["value"] * n)
        found.append(_reading("accuracy", acc, level, n, hits))
        kappa = mc.get("kappa_linear") or mc.get("kappa_quadratic")
        found.append(_reading("weighted_kappa", kappa, level, n, None))
    else:
        found.append(_reading("auroc", payload.get("auc"), level, int(cohort["n_cases"]), None))
        op = _operating_point(payload)
        if op is not None:
            c = op["confusion"]
            counts = {
                "sensitivity": (c["tp"] + c["fn"], c["tp"]),
                "specificity": (c["tn"] + c["fp"], c["tn"]),
                "accuracy": (c["tp"] + c["fn"] + c["tn"] + c["fp"], c["tp"] + c["tn"]),
            }
            for metric, (n, x) in counts.items():
                found.append(_reading(metric, op.get(metric), level, n, x))
    return [r for r in found if r is not None]


def logit(p: float) -> float:
    p = min(max(p, EPS), 1 - EPS)
    return math.log(p / (1 - p))


def expit(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def to_scale(scale: str, value: float) -> float:
    return logit(value) if scale == "logit" else value


def from_scale(scale: str, value: float) -> float:
    return expit(value) if scale == "logit" else value


def z_of(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def on_scale(r: Reading, scale: str) -> tuple[float, float] | None:
    """(estimate, variance) on the pooling scale; None when neither counts nor a CI give a
    variance. Counts win for proportions (exact binomial variance of the logit)."""
    if scale == "logit" and r.n is not None and r.events is not None and r.n > 0:
        x, m = float(r.events), float(r.n - r.events)
        if x == 0 or m == 0:
            x, m = x + 0.5, m + 0.5
        return math.log(x / m), 1 / x + 1 / m
    if r.lower is None or r.upper is None or r.upper <= r.lower:
        return None
    se = (to_scale(scale, r.upper) - to_scale(scale, r.lower)) / (2 * z_of(r.level))
    if se <= 0:
        return None
    return to_scale(scale, r.value), se * se
