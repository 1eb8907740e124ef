"""Signing: a radiologist signs the draft (strict evaluation, suggestion outcomes, narrative,
SR), and ``sign_and_store`` hands the SR to the repository after the commit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.audit.service import Actor, record, record_change
from pair.core.errors import Conflict, PairError
from pair.core.node import Node
from pair.reporting.engine import evaluate
from pair.reporting.models import ReportVersion
from pair.reporting.outputs import text
from pair.reporting.records import editable_draft, for_change, module_of, require_role, save
from pair.reporting.rendering import context, version_sr_with_previous
from pair.reporting.validation import outcomes

StoreInstance = Callable[[Dataset], Any]


def sign(
    session: Session,
    actor: Actor,
    report_id: int,
    expected_revision: int | None = None,
    *,
    confirm_override: bool = False,
) -> tuple[ReportVersion, Dataset | None]:
    """Sign the draft version; returns it and its SR (None when the study has no images).

    A category assigned against the one the findings give is signed only when the radiologist
    confirms it (``confirm_override``); the confirmation is kept with the signed evaluation and
    in the audit log, and the narrative states both categories and the reason.
    """
    require_role(actor, (Role.RADIOLOGIST.value,), "sign reports")
    report = for_change(session, actor, report_id, expected_revision)
    version = editable_draft(report)
    module = module_of(report)
    ev = evaluate(module, version.inputs)  # strict: every required value present
    if ev.contradiction is not None and not confirm_override:
        c = ev.contradiction
        raise Conflict(
            f"The category you assigned ({c['assigned_label']}) contradicts the findings, which "
            f"give {c['computed_label']}. Confirm the override to sign: the report will state "
            "both categories and your reason.",
            details={"contradiction": c, "confirm_with": "confirm_override"},
        )
    version.suggestions = outcomes(list(version.suggestions), ev)
    version.status = "final" if version.version == 1 else "amended"
    version.signed_by = actor.user_id
    version.signed_by_name = actor.user_name
    version.signed_at = datetime.now(UTC)
    version.evaluation = ev.to_dict()
    if ev.contradiction is not None:
        version.evaluation["override_confirmed_by"] = actor.user_name
    report.status = version.status
    save(session, report, version.signed_at)  # before any query could autoflush it
    ctx = context(session, report, version)
    version.text = text.narrative(module, ev, ctx)
    dataset = version_sr_with_previous(session, report, version) if ctx.evidence else None
    if dataset is not None:
        version.sr_sop_instance_uid = str(dataset.SOPInstanceUID)
    record(
        session,
        actor,
        "report.sign",
        "report",
        str(report.id),
        detail={
            "version": version.version,
            "status": version.status,
            "suggestions": [s["outcome"] for s in version.suggestions],
            "override_confirmed": ev.contradiction,
        },
    )
    record_change(session, report.facility_id, "report.signed", "report", str(report.id))
    return version, dataset


@dataclass
class SignResult:
    report_id: int
    version: int
    status: str
    sr_sop_instance_uid: str
    sr_stored: bool
    sr_error: str = ""
    suggestions: list[dict[str, Any]] = field(default_factory=list)
    revision: int = 0


def sign_and_store(
    node: Node,
    actor: Actor,
    report_id: int,
    store_instance: StoreInstance | None,
    expected_revision: int | None = None,
    *,
    confirm_override: bool = False,
) -> SignResult:
    """Sign in one transaction, then hand the SR to ``store_instance`` (the repository).

    Storing runs after the commit because the repository opens its own transaction; a failed
    store leaves the report signed with ``sr_stored`` false and the reason returned.
    """
    with node.db.session() as session:
        version, dataset = sign(
            session, actor, report_id, expected_revision, confirm_override=confirm_override
        )
        result = SignResult(
            report_id,
            version.version,
            version.status,
            version.sr_sop_instance_uid,
            False,
            suggestions=list(version.suggestions),
            revision=version.report.revision,
        )
    if dataset is None:
        result.sr_error = "The study has no stored images to reference; no SR was created."
        return result
    if store_instance is None:
        result.sr_error = "No SR store configured."
        return result
    try:
        store_instance(dataset)
    except PairError as exc:
        result.sr_error = exc.message
        return result
    with node.db.session() as session:
        stored = session.scalar(
            select(ReportVersion).where(
                ReportVersion.report_id == report_id, ReportVersion.version == version.version
            )
        )
        if stored is not None:
            stored.sr_stored = True
    result.sr_stored = True
    return result
