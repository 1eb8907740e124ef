"""Feedback to the hub: an aggregate-only, signed JSON summary of one evaluation.

The payload comes from the result's task (``pair.evaluation.feedback_payload`` builds it and
refuses anything case-level); this module signs, validates and sends it. The envelope is signed
with HMAC-SHA256 over the canonical JSON of the payload (sorted keys, no whitespace, UTF-8)
using a per-site secret shared with the hub (see docs/evaluation.md, "Key handling").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from pair.core.errors import Invalid, PairError
from pair.evaluation.feedback_payload import (
    DEFAULT_MIN_CELL,
    FORMAT,
    FORMAT_VERSION,
    assert_aggregate_only,
)
from pair.evaluation.report.context import EvaluationContext
from pair.evaluation.result import AnyResult
from pair.evaluation.task import task_for

__all__ = [
    "DEFAULT_MIN_CELL",
    "FORMAT",
    "FORMAT_VERSION",
    "FeedbackError",
    "assert_aggregate_only",
    "build_feedback_payload",
    "canonical_json",
    "generate_key",
    "load_key",
    "schema",
    "sign_payload",
    "submit_feedback",
    "validate_envelope",
    "verify_signature",
]

SIGNATURE_ALG = "HMAC-SHA256"
MIN_KEY_BYTES = 32
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class FeedbackError(PairError):
    """The hub did not accept the feedback (after retries)."""

    http_status = 502
    exit_code = 6
    code = "feedback_failed"


def build_feedback_payload(
    result: AnyResult,
    context: EvaluationContext,
    *,
    site: dict[str, str] | None = None,
    comment: str | None = None,
    min_cell: int = DEFAULT_MIN_CELL,
) -> dict[str, Any]:
    """Aggregate summary for the hub; ``site`` holds descriptors such as region or
    facility_type (no names of patients or staff)."""
    return task_for(result).feedback(result, context, site=site, comment=comment, min_cell=min_cell)


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
