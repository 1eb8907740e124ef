"""The aggregate-only feedback payload for each task, and the check that keeps it aggregate.

Nothing case-level leaves the site: the payload holds counts, rates and intervals only;
``assert_aggregate_only`` refuses identifier-like keys, DICOM UIDs and long arrays, and
subgroups smaller than ``min_cell`` cases are suppressed. Signing and sending live in
``pair.evaluation.feedback``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pair.core.errors import Invalid
from pair.evaluation.report.context import EvaluationContext
from pair.evaluation.result import (
    CalibrationResult,
    Estimate,
    EvaluationResult,
    MulticlassResult,
    finite,
)

FORMAT = "pair-evaluation-feedback"
FORMAT_VERSION = "1.0"
MAX_LIST = 200
DEFAULT_MIN_CELL = 5
ROC_GRID_STEP = 5  # every 5th point of the 101-point grid: 21 points
FORBIDDEN_KEYS = {
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "birth_date",
    "mrn",
    "case_id",
    "case_ids",
    "accession",
    "accession_number",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "scores",
    "y_true",
    "labels",
    "predictions",
    "thresholds",
    "cases",
    "roc_empirical",
}
_UID = re.compile(r"^\d+(\.\d+){3,}$")
_DATE = re.compile(r"(\d{4})-?(\d{2})-?\d{2}")


def _est(e: Estimate | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"value": e.value, "lower": e.lower, "upper": e.upper, "method": e.method}


def _months(date_range: str | None) -> dict[str, str] | None:
    """The cohort's first and last study month (YYYY-MM): coarse enough to name no study day,
    fine enough for the hub to file the feedback under a month or quarter."""
    found = _DATE.findall(date_range or "")
    if not found:
        return None
    months = sorted(f"{y}-{m}" for y, m in found)
    return {"start": months[0], "end": months[-1]}


def _header(context: EvaluationContext, site: dict[str, str] | None, kind: str) -> dict[str, Any]:
    ref = (context.plan_check or {}).get("ref")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "feedback_id": str(uuid.uuid4()),
        "created_at": datetime.now(UTC).isoformat(),
        "output_kind": kind,
        "algorithm": {
            "id": context.algorithm_id,
            "name": context.algorithm_name,
            "version": context.algorithm_version,
            "sha256": context.model_sha256,
        },
        "site": dict(site or {}),
        "reference_standard": context.truth_source,
        "evaluation_period": _months(context.date_range),
        "use_case_id": str(ref).split("@")[0] if ref else None,
    }


def multiclass_payload(
    result: MulticlassResult,
    context: EvaluationContext,
    site: dict[str, str] | None,
    comment: str | None,
    min_cell: int,
) -> dict[str, Any]:
    """Aggregates of a multiclass evaluation: counts, confusion matrix, kappas, per-class
    metrics, per-class ROC at 21 fixed false-positive rates, subgroups of ``min_cell``+ cases."""
    c = result.cohort
    e = result.evaluation
    grid = np.linspace(0.0, 1.0, 21)
    roc = []
    for curve in result.roc:
        if not curve.points:
            continue
        fpr = np.array([p.fpr for p in curve.points])
        tpr = np.array([p.tpr for p in curve.points])
        idx = np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, tpr.size - 1)
        roc.append(
            {
                "name": curve.name,
                "points": [
                    {"fpr": float(f), "tpr": float(t)} for f, t in zip(grid, tpr[idx], strict=True)
                ],
            }
        )
    kept = [s for s in result.subgroups if s.n >= min_cell]
    payload = _header(context, site, "multiclass")
    payload.update(
        {
            "cohort": {
                "n_cases": c.n_cases,
                "n_clusters": c.n_clusters,
                "n_excluded": c.n_excluded,
                "exclusion_reasons": dict(c.exclusion_reasons),
            },
            "statistics": {"level": result.level, "n_boot": result.n_boot, "seed": result.seed},
            "multiclass": {
                "classes": list(result.classes),
                "ordinal": result.ordinal,
                "decision_rule": result.decision_rule,
                "class_counts": dict(c.class_counts),
                "predicted_counts": dict(c.predicted_counts),
                "confusion": [list(row) for row in e.confusion],
                "accuracy": _est(e.accuracy),
                "kappa": _est(e.kappa),
                "kappa_linear": _est(result.kappa_linear),
                "kappa_quadratic": _est(result.kappa_quadratic),
                "macro_auc": result.macro_auc,
                "per_class": [
                    {
                        "name": pc.name,
                        "n_reference": pc.n_reference,
                        **{
                            m: _est(getattr(pc, m))
                            for m in ("sensitivity", "specificity", "ppv", "npv", "auc")
                        },
                    }
                    for pc in e.per_class
                ],
                "roc": roc,
                "calibration": _multiclass_calibration(result),
                "subgroups": [
                    {
                        "variable": s.variable,
                        "level": s.level,
                        "n": s.n,
                        "accuracy": _est(s.accuracy),
                        "kappa": _est(s.kappa),
                        "too_small": s.too_small,
                    }
                    for s in kept
                ],
                "suppressed_subgroups": len(result.subgroups) - len(kept),
                "comparison": None
                if result.comparison is None
                else {
                    "name_a": result.comparison.name_a,
                    "name_b": result.comparison.name_b,
                    "accuracy_difference": _est(result.comparison.accuracy_difference),
                    "mcnemar_p_value": result.comparison.mcnemar.p_value,
                    "kappa_difference": _est(result.comparison.kappa_difference),
                    "kappa_p_value": result.comparison.kappa_p_value,
                    "auc_differences": [
                        {"name": d.name, "difference": _est(d.difference), "p_value": d.p_value}
                        for d in result.comparison.per_class
                    ],
                },
            },
            "subgroups": [],
            "suppressed_subgroups": len(result.subgroups) - len(kept),
            "comparison": None,
            "warnings": list(result.warnings),
            "comment": comment,
        }
    )
    assert_aggregate_only(payload)
    return payload


def _calibration_block(c: CalibrationResult) -> dict[str, Any]:
    return {
        "brier": _est(c.brier),
        "slope": _est(c.slope),
        "intercept": _est(c.intercept),
        "calibration_in_the_large": _est(c.calibration_in_the_large),
        "ece_uniform_10": c.reliability_uniform.ece,
        "ece_quantile_10": c.reliability_quantile.ece,
    }


def _multiclass_calibration(result: MulticlassResult) -> dict[str, Any] | None:
    if result.calibration is None:
        return None
    return {
        "brier": _est(result.calibration.brier),
        "per_class": [
            {"name": c.name, **_calibration_block(c.calibration)}
            for c in result.calibration.per_class
        ],
    }


def binary_payload(
    result: EvaluationResult,
    context: EvaluationContext,
    site: dict[str, str] | None,
    comment: str | None,
    min_cell: int,
) -> dict[str, Any]:
    """The binary result's aggregate summary: cohort, AUC, operating points, a thinned ROC,
    calibration, subgroups of at least ``min_cell`` cases, comparison and warnings."""
    c = result.cohort
    kept = [s for s in result.subgroups if s.n >= min_cell]
    payload: dict[str, Any] = {
        **_header(context, site, "binary"),
        "cohort": {
            "n_cases": c.n_cases,
            "n_positive": c.n_positive,
            "n_negative": c.n_negative,
            "n_clusters": c.n_clusters,
            "n_excluded": c.n_excluded,
            "exclusion_reasons": dict(c.exclusion_reasons),
        },
        "statistics": {"level": result.level, "n_boot": result.n_boot, "seed": result.seed},
        "auc": _est(result.auc),
        "operating_points": [
            {
                "name": op.name,
                "threshold": op.threshold,
                "chosen_on_same_data": op.chosen_on_same_data,
                "confusion": op.confusion.model_dump(),
                **{
                    m: _est(getattr(op, m))
                    for m in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "f1")
                },
            }
            for op in result.operating_points
        ],
        "roc": [
            {
                "fpr": p.fpr,
                "tpr": p.tpr,
                "tpr_lower": finite(p.tpr_lower),
                "tpr_upper": finite(p.tpr_upper),
            }
            for p in result.roc[::ROC_GRID_STEP]
        ],
        "calibration": None
        if result.calibration is None
        else _calibration_block(result.calibration),
        "subgroups": [
            {
                "variable": s.variable,
                "level": s.level,
                "n": s.n,
                "positives": s.positives,
                "auc": _est(s.auc),
                "sensitivity": _est(s.sensitivity),
                "specificity": _est(s.specificity),
                "too_small": s.too_small,
            }
            for s in kept
        ],
        "suppressed_subgroups": len(result.subgroups) - len(kept),
        "comparison": None
        if result.comparison is None
        else {
            "name_a": result.comparison.name_a,
            "name_b": result.comparison.name_b,
            "auc_difference": _est(result.comparison.auc.difference),
            "p_value": result.comparison.auc.p_value,
        },
        "warnings": list(result.warnings),
        "comment": comment,
    }
    assert_aggregate_only(payload)
    return payload


def assert_aggregate_only(obj: Any, path: str = "$") -> None:
    """Refuse anything that looks case-level: identifier keys, UIDs, long arrays."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if str(key).lower() in FORBIDDEN_KEYS:
                raise Invalid(f"feedback must be aggregate-only: key {path}.{key} is not allowed")
            assert_aggregate_only(value, f"{path}.{key}")
    elif isinstance(obj, list | tuple):
        if len(obj) > MAX_LIST:
            raise Invalid(
                f"feedback must be aggregate-only: {path} has {len(obj)} items "
                f"(max {MAX_LIST}); per-case arrays are not allowed"
            )
        for i, value in enumerate(obj):
            assert_aggregate_only(value, f"{path}[{i}]")
    elif isinstance(obj, str) and _UID.match(obj.strip()):
        raise Invalid(f"feedback must be aggregate-only: {path} looks like a DICOM UID")
