"""Final report values as case labels for local AI evaluation and the registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.reporting.engine import evaluate
from pair.reporting.loader import get_module
from pair.reporting.models import Report


@dataclass(frozen=True)
class CaseLabel:
    """A signed report's final values, as labels for evaluation and the registry."""

    study_uid: str
    facility_id: int
    report_id: int
    version: int
    status: str
    module_id: str
    module_version: str
    signed_at: datetime | None
    summary_element: str | None
    summary_value: Any
    summary_code: str | None
    values: dict[str, Any]
    codes: dict[str, Any]  # CDE id -> value code(s) or number


def final_labels(session: Session, facility_id: int | None) -> list[CaseLabel]:
    """Latest signed version of every report (of one facility, or all when None)."""
    stmt = select(Report).where(Report.status != "draft").order_by(Report.id)
    if facility_id is not None:
        stmt = stmt.where(Report.facility_id == facility_id)
    labels = []
    for report in session.scalars(stmt):
        signed = [v for v in report.versions if v.signed_at is not None]
        if not signed:
            continue
        version = signed[-1]
        module = get_module(report.module_id, report.module_version)
        ev = evaluate(module, version.inputs)
        values = ev.all_values
        codes: dict[str, Any] = {}
        for el in module.elements:
            if el.coded and el.cde and el.id in values:
                v = values[el.id]
                if el.kind in ("choice", "multichoice"):
                    picked = [
                        c.cde for c in el.choices if c.value in (v if isinstance(v, list) else [v])
                    ]
                    codes[el.cde] = picked if el.kind == "multichoice" else picked[0]
                else:
                    codes[el.cde] = v
        summary = module.summary_element
        summary_value = values.get(summary) if summary else None
        summary_el = module.by_id.get(summary) if summary else None
        labels.append(
            CaseLabel(
                study_uid=report.study_uid,
                facility_id=report.facility_id,
                report_id=report.id,
                version=version.version,
                status=version.status,
                module_id=report.module_id,
                module_version=report.module_version,
                signed_at=version.signed_at,
                summary_element=summary,
                summary_value=summary_value,
                summary_code=codes.get(summary_el.cde) if summary_el and summary_el.cde else None,
                values=values,
                codes=codes,
            )
        )
    return labels
