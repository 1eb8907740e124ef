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
from pair.evaluation.stats.bootstrap import Method, run_bootstrap
from pair.evaluation.stats.proportions import confusion_at, proportion
from pair.evaluation.stats.roc import auc_ci_delong
from pair.evaluation.stats.weighted import (
    SortedScores,
    count_vectors,
    counts_from_product,
    ratio,
    weighted_auc,
)

MIN_PER_CLASS = 10
MAX_CI_WIDTH = 0.4
SUBGROUP_BOOT = 1000  # resamples per subgroup level (clustered data only), both tasks
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


def _clustered_cis(
    yy: IntArray,
    ss: FloatArray,
    cc: Any,
    threshold: float,
    level: float,
    n_boot: int,
    seed: int,
    boot_method: Method,
) -> dict[str, tuple[float, float]]:
    """AUC, sensitivity and specificity intervals from the patient-clustered bootstrap."""
    srt = SortedScores.build(yy, ss)
    design = count_vectors(yy, ss >= threshold).astype(np.float32)

    def stat_fn(w: FloatArray) -> dict[str, FloatArray]:
        c = counts_from_product(w @ design)
        return {
            "auc": weighted_auc(w, srt),
            "sensitivity": ratio(c.tp, c.tp + c.fn),
            "specificity": ratio(c.tn, c.tn + c.fp),
        }

    run = run_bootstrap(
        stat_fn, yy.size, n_boot=n_boot, seed=seed, clusters=cc, bca=boot_method == "bca"
    )
    point = stat_fn(np.ones((1, yy.size)))
    out = {}
    for key in ("auc", "sensitivity", "specificity"):
        iv = run.interval(key, float(point[key][0]), level, boot_method)
        out[key] = (iv.lower, iv.upper)
    return out


def subgroup_rows(
    y: IntArray,
    scores: FloatArray,
    threshold: float,
    groups: Mapping[str, Any],
    level: float = 0.95,
    *,
    min_per_class: int = MIN_PER_CLASS,
    max_ci_width: float = MAX_CI_WIDTH,
    clusters: Any | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    boot_method: Method = "percentile",
) -> list[SubgroupRow]:
    """One row per level of each column. With ``clusters`` (patient ids) the CIs come from the
    patient-clustered bootstrap within the subgroup instead of DeLong/Wilson."""
    cl = None if clusters is None else np.asarray(clusters)
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
            c = confusion_at(yy, ss, threshold)
            sens = _estimate(proportion(c.tp, c.tp + c.fn, level), "wilson")
            spec = _estimate(proportion(c.tn, c.tn + c.fp, level), "wilson")
            if n_pos > 0 and n_neg > 0:
                a = auc_ci_delong(yy, ss, level)
                auc_est = Estimate(value=a.auc, lower=a.lower, upper=a.upper, method="delong")
            else:
                reasons.append("AUC undefined: only one reference class")
            if cl is not None:
                cis = _clustered_cis(yy, ss, cl[mask], threshold, level, n_boot, seed, boot_method)
                label = f"cluster bootstrap {boot_method}"
                if auc_est is not None:
                    lo, hi = cis["auc"]
                    auc_est = auc_est.model_copy(update={"lower": lo, "upper": hi, "method": label})
                sens = sens.model_copy(
                    update={
                        "lower": cis["sensitivity"][0],
                        "upper": cis["sensitivity"][1],
                        "method": label,
                    }
                )
                spec = spec.model_copy(
                    update={
                        "lower": cis["specificity"][0],
                        "upper": cis["specificity"][1],
                        "method": label,
                    }
                )
            if n_pos < min_per_class:
                reasons.append(f"{n_pos} positives (< {min_per_class})")
            if n_neg < min_per_class:
                reasons.append(f"{n_neg} negatives (< {min_per_class})")
            for name, est in (("AUC", auc_est), ("sensitivity", sens), ("specificity", spec)):
                if est is not None and est.width is not None and est.width > max_ci_width:
                    reasons.append(f"{name} CI width {est.width:.2f} (> {max_ci_width})")
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


def group_counts(groups: Mapping[str, Any], n: int) -> dict[str, dict[str, int]]:
    """Cases per level of each subgroup variable (missing values count as 'missing')."""
    out = {}
    for var, values in groups.items():
        labels = group_labels(values, n, var)
        uniq, cnt = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
        out[var] = {str(u): int(c) for u, c in zip(uniq, cnt, strict=True)}
    return out
