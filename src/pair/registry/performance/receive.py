"""The hub's side of evaluation feedback: facility secrets, and accepting one signed envelope.

Checks, in order, each with its own answer: the caller is a site-node account (403); the body is
JSON (400); it has a payload and a signature (422); the facility has a secret (403); the HMAC
verifies with it (401); the envelope matches the schema (422); nothing case-level (422); the
Idempotency-Key, when sent, names the payload's feedback id (400). A feedback id seen before
with the same content is acknowledged again without a second row; with other content, 409.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pair.accounts import policy
from pair.accounts.models import Facility
from pair.accounts.policy import Action
from pair.audit.service import Actor, record
from pair.core.config import Settings
from pair.core.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound, Unauthorized
from pair.db.base import utcnow
from pair.evaluation import feedback as fb
from pair.registry.performance import alerts
from pair.registry.performance.metrics import readings
from pair.registry.performance.models import PerfFeedback, PerfFeedbackSecret, PerfMetric

SECRET_BYTES = 32
MAX_ID, MAX_VERSION = 200, 100  # the registry's columns (the schema allows 500)


@dataclass(frozen=True)
class Accepted:
    feedback: PerfFeedback
    created: bool


def issue_secret(session: Session, facility_code: str) -> tuple[Facility, str]:
    """A new random secret for the facility (base64); earlier ones stop verifying."""
    facility = session.scalar(select(Facility).where(Facility.code == facility_code))
    if facility is None:
        raise NotFound(f"No facility with code {facility_code!r}.")
    now = utcnow()
    for old in session.scalars(
        select(PerfFeedbackSecret).where(
            PerfFeedbackSecret.facility_id == facility.id, PerfFeedbackSecret.revoked_at.is_(None)
        )
    ):
        old.revoked_at = now
    secret = base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")
    session.add(PerfFeedbackSecret(facility_id=facility.id, secret=secret))
    session.flush()
    record(
        session,
        Actor.system("cli"),
        "perf.feedback-secret.issue",
        "facility",
        facility.code,
        facility_id=facility.id,
    )
    return facility, secret


def _secret(session: Session, facility_id: int) -> bytes | None:
    row = session.scalar(
        select(PerfFeedbackSecret)
        .where(
            PerfFeedbackSecret.facility_id == facility_id, PerfFeedbackSecret.revoked_at.is_(None)
        )
        .order_by(PerfFeedbackSecret.id.desc())
        .limit(1)
    )
    return None if row is None else base64.b64decode(row.secret)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_envelope(raw: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise Invalid("The body must be a JSON object {payload, signature}.")
    if not isinstance(envelope.get("payload"), dict) or not isinstance(
        envelope.get("signature"), dict
    ):
        raise Invalid("The envelope needs a 'payload' object and a 'signature' object.")
    return envelope


def period_of(payload: dict[str, Any], granularity: str) -> tuple[str, date]:
    """The month or quarter the evaluation belongs to: its latest study month, else the month
    the site created the feedback."""
    span = payload.get("evaluation_period") or {}
    if span.get("end"):
        year, month = (int(x) for x in str(span["end"]).split("-"))
    else:
        created = datetime.fromisoformat(payload["created_at"])
        year, month = created.year, created.month
    if granularity == "month":
        return f"{year:04d}-{month:02d}", date(year, month, 1)
    q = (month - 1) // 3 + 1
    return f"{year:04d}-Q{q}", date(year, 3 * q - 2, 1)


def _check(session: Session, actor: Actor, envelope: dict[str, Any], key_header: str | None) -> str:
    """Signature, schema, aggregate-only and idempotency key; returns the key id."""
    assert actor.facility_id is not None
    key = _secret(session, actor.facility_id)
    if key is None:
        raise Forbidden(
            "No feedback secret is set for your facility at this hub; the hub operator issues "
            "one with 'pair registry feedback-secret FACILITY'."
        )
    try:
        good = fb.verify_signature(envelope, key)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise Unauthorized("The feedback signature does not verify with your facility's secret.")
    fb.validate_envelope(envelope)
    fb.assert_aggregate_only(envelope["payload"])
    payload = envelope["payload"]
    if key_header and key_header != payload["feedback_id"]:
        raise BadRequest("The Idempotency-Key header does not match payload.feedback_id.")
    algorithm = payload["algorithm"]
    if not algorithm.get("id") or not algorithm.get("version"):
        raise Invalid("payload.algorithm: id and version are required by the registry.")
    if len(algorithm["id"]) > MAX_ID or len(algorithm["version"]) > MAX_VERSION:
        raise Invalid(
            f"payload.algorithm: the registry keeps ids of at most {MAX_ID} and versions of at "
            f"most {MAX_VERSION} characters."
        )
    return str(envelope["signature"].get("key_id", ""))


def _existing(session: Session, feedback_id: str, digest: str, facility_id: int) -> Accepted:
    row = session.scalar(select(PerfFeedback).where(PerfFeedback.feedback_id == feedback_id))
    if row is None:
        raise Conflict(f"Feedback {feedback_id} could not be stored; send it again.")
    if row.payload_sha256 != digest or row.facility_id != facility_id:
        raise Conflict(
            f"Feedback {feedback_id} was already received with different content; "
            "a new evaluation needs a new feedback_id."
        )
    return Accepted(row, created=False)


def accept(
    session: Session,
    settings: Settings,
    actor: Actor,
    raw: bytes,
    idempotency_key: str | None = None,
) -> Accepted:
    """Verify, validate and store one feedback envelope (see the module docstring)."""
    policy.check_role(actor, Action.PERF_FEEDBACK_SUBMIT)
    envelope = parse_envelope(raw)
    key_id = _check(session, actor, envelope, idempotency_key)
    payload: dict[str, Any] = envelope["payload"]
    facility_id = actor.facility_id
    assert facility_id is not None
    digest = hashlib.sha256(fb.canonical_json(payload)).hexdigest()
    feedback_id = str(payload["feedback_id"]).lower()
    if session.scalar(select(PerfFeedback.id).where(PerfFeedback.feedback_id == feedback_id)):
        return _existing(session, feedback_id, digest, facility_id)
    period, start = period_of(payload, settings.perf_period)
    created = datetime.fromisoformat(payload["created_at"])
    algorithm = payload["algorithm"]
    row = PerfFeedback(
        feedback_id=feedback_id,
        payload_sha256=digest,
        facility_id=facility_id,
        algorithm_id=str(algorithm["id"]),
        algorithm_version=str(algorithm["version"]),
        algorithm_name=str(algorithm.get("name") or ""),
        output_kind=str(payload.get("output_kind") or "binary"),
        use_case_id=payload.get("use_case_id"),
        period=period,
        period_start=start,
        site_created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
        n_cases=int(payload["cohort"]["n_cases"]),
        key_id=key_id,
        payload=payload,
        metrics=[
            PerfMetric(
                metric=r.metric,
                value=r.value,
                lower=r.lower,
                upper=r.upper,
                level=r.level,
                n=r.n,
                events=r.events,
            )
            for r in readings(payload)
        ],
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # the same id arrived concurrently
        return _existing(session, feedback_id, digest, facility_id)
    record(session, actor, "perf.feedback.receive", "perf_feedback", feedback_id)
    alerts.refresh(session, settings, row.algorithm_id, row.algorithm_version, facility_id)
    return Accepted(row, created=True)
