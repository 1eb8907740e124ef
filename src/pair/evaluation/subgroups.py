"""Subgroup table: the headline metrics per level of any categorical column.

Each row carries n, positives, AUC (DeLong) and sensitivity/specificity (Wilson) at the main
threshold, and ``too_small`` with the reasons when the subgroup cannot support a conclusion:
fewer than ``MIN_PER_CLASS`` positives or negatives, or a CI wider than ``MAX_CI_WIDTH``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pair.core.errors import Invalid
from pair.evaluation.result import Estimate, SubgroupRow
from pair.evaluation.stats.arrays import FloatArray, IntArray
from pair.evaluation.stats.proportions import confusion_at, proportion
from pair.evaluation.stats.roc import auc_ci_delong

MIN_PER_CLASS = 10
MAX_CI_WIDTH = 0.4
MISSING = "missing"


def group_labels(values: Any, n: int, name: str) -> list[str]:
    """Categorical column as strings; None/NaN/empty become ``"missing"``."""
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1 or arr.size != n:
        raise Invalid(f"group column {name!r} must have {n} values, got shape {arr.shape}")
    out = []
    for v in arr:
        if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "":
            out.append(MISSING)
        else:
            out.append(str(v))
    return out


def _estimate(p: Any, method: str) -> Estimate:
    return Estimate(
        value=p.value,
        lower=p.lower,
        upper=p.upper,
        method=method,
        numerator=p.numerator,
        denominator=p.denominator,
    )


def subgroup_rows(
    y: IntArray,
    scores: FloatArray,
    threshold: float,
    groups: Mapping[str, Any],
    level: float = 0.95,
    *,
    min_per_class: int = MIN_PER_CLASS,
    max_ci_width: float = MAX_CI_WIDTH,
) -> list[SubgroupRow]:
    rows: list[SubgroupRow] = []
    for variable, values in groups.items():
        labels = np.asarray(group_labels(values, y.size, variable), dtype=object)
        for level_name in sorted(set(labels.tolist()), key=lambda s: (s == MISSING, s)):
            mask = labels == level_name
            yy, ss = y[mask], scores[mask]
            n_pos = int(yy.sum())
            n_neg = int(yy.size - n_pos)
            reasons: list[str] = []
            auc_est: Estimate | None = None
            if n_pos > 0 and n_neg > 0:
                a = auc_ci_delong(yy, ss, level)
                auc_est = Estimate(value=a.auc, lower=a.lower, upper=a.upper, method="delong")
            else:
                reasons.append("AUC undefined: only one reference class")
            c = confusion_at(yy, ss, threshold)
            sens = _estimate(proportion(c.tp, c.tp + c.fn, level), "wilson")
            spec = _estimate(proportion(c.tn, c.tn + c.fp, level), "wilson")
            if n_pos < min_per_class:
                reasons.append(f"{n_pos} positives (< {min_per_class})")
            if n_neg < min_per_class:
                reasons.append(f"{n_neg} negatives (< {min_per_class})")
            for label, est in (("AUC", auc_est), ("sensitivity", sens), ("specificity", spec)):
                if est is not None and est.width is not None and est.width > max_ci_width:
                    reasons.append(f"{label} CI width {est.width:.2f} (> {max_ci_width})")
            rows.append(
                SubgroupRow(
                    variable=variable,
                    level=level_name,
                    n=int(yy.size),
                    positives=n_pos,
                    negatives=n_neg,
                    auc=auc_est,
                    sensitivity=sens,
                    specificity=spec,
                    too_small=bool(reasons),
                    reasons=reasons,
                )
            )
    return rows
