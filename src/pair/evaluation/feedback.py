"""Feedback to the hub: an aggregate-only, signed JSON summary of one evaluation.

Nothing case-level leaves the site: the payload holds counts, rates and intervals only;
``assert_aggregate_only`` refuses identifier-like keys, DICOM UIDs and long arrays before
signing, and subgroups smaller than ``min_cell`` cases are suppressed. The envelope is signed
with HMAC-SHA256 over the canonical JSON of the payload (sorted keys, no whitespace, UTF-8)
using a per-site secret shared with the hub (see docs/evaluation.md, "Key handling").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np

from pair.core.errors import Invalid, PairError
from pair.evaluation.report.context import ReportContext
from pair.evaluation.result import (
    AnyResult,
    CalibrationResult,
    Estimate,
    MulticlassResult,
    finite,
)

FORMAT = "pair-evaluation-feedback"
FORMAT_VERSION = "1.0"
SIGNATURE_ALG = "HMAC-SHA256"
MIN_KEY_BYTES = 32
MAX_LIST = 200
DEFAULT_MIN_CELL = 5
ROC_GRID_STEP = 5  # every 5th point of the 101-point grid: 21 points
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
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


class FeedbackError(PairError):
    """The hub did not accept the feedback (after retries)."""

    http_status = 502
    exit_code = 6
    code = "feedback_failed"


def _est(e: Estimate | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"value": e.value, "lower": e.lower, "upper": e.upper, "method": e.method}


def _header(context: ReportContext, site: dict[str, str] | None, kind: str) -> dict[str, Any]:
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
    }


def _multiclass_payload(
    result: MulticlassResult,
    context: ReportContext,
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


def build_feedback_payload(
    result: AnyResult,
    context: ReportContext,
    *,
    site: dict[str, str] | None = None,
    comment: str | None = None,
    min_cell: int = DEFAULT_MIN_CELL,
) -> dict[str, Any]:
    """Aggregate summary for the hub; ``site`` holds descriptors such as region or
    facility_type (no names of patients or staff)."""
    if isinstance(result, MulticlassResult):
        return _multiclass_payload(result, context, site, comment, min_cell)
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


def canonical_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sign_payload(payload: dict[str, Any], key: bytes, key_id: str) -> dict[str, Any]:
    """Envelope {payload, signature}; the signature covers the canonical payload bytes."""
    if len(key) < MIN_KEY_BYTES:
        raise Invalid(f"signing key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    assert_aggregate_only(payload)
    mac = hmac.new(key, canonical_json(payload), hashlib.sha256).digest()
    envelope = {
        "payload": payload,
        "signature": {
            "alg": SIGNATURE_ALG,
            "key_id": key_id,
            "value": base64.urlsafe_b64encode(mac).decode("ascii").rstrip("="),
        },
    }
    validate_envelope(envelope)
    return envelope


def validate_envelope(envelope: dict[str, Any]) -> None:
    """Check the envelope against data/feedback.schema.json; say which field is wrong."""
    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(envelope), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        raise Invalid(f"feedback does not match its schema at {where}: {first.message}")


def verify_signature(envelope: dict[str, Any], key: bytes) -> bool:
    """True when the envelope's HMAC matches (constant-time comparison)."""
    sig = envelope.get("signature") or {}
    if sig.get("alg") != SIGNATURE_ALG or "payload" not in envelope:
        return False
    mac = hmac.new(key, canonical_json(envelope["payload"]), hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")
    return hmac.compare_digest(expected, str(sig.get("value", "")))


def generate_key(path: Path) -> bytes:
    """Create a new random 32-byte key file (base64, mode 0600); refuses to overwrite."""
    key = secrets.token_bytes(MIN_KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(base64.b64encode(key).decode("ascii") + "\n")
    return key


def load_key(path: Path) -> bytes:
    """Read a base64 key file; refuse files readable by group or others."""
    if not path.is_file():
        raise Invalid(f"signing key file {path} does not exist; create one with generate_key")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise Invalid(f"signing key file {path} must be readable by its owner only (chmod 600)")
    try:
        key = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except ValueError as exc:
        raise Invalid(f"signing key file {path} is not valid base64") from exc
    if len(key) < MIN_KEY_BYTES:
        raise Invalid(f"signing key in {path} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def schema() -> dict[str, Any]:
    text = (
        resources.files("pair.evaluation")
        .joinpath("data/feedback.schema.json")
        .read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


@dataclass(frozen=True)
class SubmitResult:
    status_code: int
    attempts: int
    body: Any


def submit_feedback(
    envelope: dict[str, Any],
    url: str,
    token: str,
    *,
    retries: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> SubmitResult:
    """POST the signed envelope; retry transport errors, 408/425/429 and 5xx with exponential
    backoff (backoff * 2**attempt, or the server's Retry-After, capped at max_backoff). The
    feedback_id is sent as Idempotency-Key so a retried delivery is recognisable."""
    if retries < 0:
        raise Invalid(f"retries must be >= 0, got {retries}")
    payload = envelope.get("payload", {})
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": str(payload.get("feedback_id", "")),
        "X-PAIR-Signature": f"{envelope['signature']['alg']} "
        f"{envelope['signature']['key_id']}:{envelope['signature']['value']}",
    }
    body = json.dumps(envelope, allow_nan=False)
    last = "no attempt made"
    with httpx.Client(timeout=timeout, transport=transport) as client:
        for attempt in range(retries + 1):
            delay = min(max_backoff, backoff * 2**attempt)
            try:
                resp = client.post(
                    url, content=body, headers={**headers, "Content-Type": "application/json"}
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 300:
                    try:
                        data: Any = resp.json()
                    except ValueError:
                        data = resp.text
                    return SubmitResult(resp.status_code, attempt + 1, data)
                last = f"HTTP {resp.status_code}"
                if resp.status_code not in RETRY_STATUS:
                    raise FeedbackError(
                        f"the hub refused the feedback: {last}", details={"attempts": attempt + 1}
                    )
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = min(max_backoff, float(retry_after))
            if attempt < retries:
                time.sleep(delay)
    raise FeedbackError(
        f"feedback not delivered after {retries + 1} attempts ({last})",
        details={"attempts": retries + 1},
    )
