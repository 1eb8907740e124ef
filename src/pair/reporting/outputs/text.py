"""Narrative report text and CDE-coded JSON."""

from __future__ import annotations

from typing import Any

from pair.reporting.engine import Evaluation
from pair.reporting.model import Module
from pair.reporting.outputs.context import ReportContext, coded_observations

STATUS_LINE = {"draft": "DRAFT - not signed", "final": "Final", "amended": "Amended"}


def dicom_date(value: str) -> str:
    """DICOM DA ``YYYYMMDD`` as ``YYYY-MM-DD`` (anything else as it is)."""
    v = value.strip()
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}" if len(v) == 8 and v.isdigit() else v


def narrative(module: Module, ev: Evaluation, ctx: ReportContext) -> str:
    """Plain-text report: header (who and which study, de-identified), sections, signature.

    The header carries what a reader needs to put the text back with its images: the
    pseudonym, the study UID, the accession number and the study date.
    """
    head = [module.label, f"Patient (pseudonym): {ctx.patient_id}", f"Study UID: {ctx.study_uid}"]
    if ctx.accession_number:
        head.append(f"Accession number: {ctx.accession_number}")
    if ctx.study_date:
        head.append(f"Study date: {dicom_date(ctx.study_date)}")
    head.append(f"Status: {STATUS_LINE.get(ctx.status, ctx.status)} (version {ctx.version})")
    body = ev.text
    sign = ""
    if ctx.status != "draft" and ctx.author:
        stamp = ctx.signed_at.strftime("%Y-%m-%d %H:%M UTC") if ctx.signed_at else ""
        sign = f"\n\nSigned by {ctx.author} {stamp}".rstrip()
    return "\n".join(head) + "\n\n" + body + sign + "\n"


def coded_json(module: Module, ev: Evaluation, ctx: ReportContext) -> dict[str, Any]:
    """The report as CDE-coded data: what the registry and evaluation read."""
    observations = []
    for ob in coded_observations(module, ev):
        observations.append(
            {
                "element": ob.element,
                "label": ob.label,
                "cde": {"id": ob.cde_id, "name": ob.cde_name, "verification": ob.verification},
                "value": ob.value,
                "display": ob.display,
                "value_codes": [{"code": c, "name": n, "verification": v} for c, n, v in ob.codes],
                **({"unit": ob.unit} if ob.unit else {}),
                "computed": ob.computed,
            }
        )
    summary = None
    if module.summary_element and module.summary_element in ev.all_values:
        summary = next((o for o in observations if o["element"] == module.summary_element), None)
    return {
        "schema": "pair-coded-report/1",
        "report": {
            "id": ctx.report_id,
            "version": ctx.version,
            "status": ctx.status,
            "signed_at": ctx.signed_at.isoformat() if ctx.signed_at else None,
            "author": ctx.author,
        },
        "study_uid": ctx.study_uid,
        "patient_id": ctx.patient_id,
        "module": {"id": module.id, "version": module.version, "wording": module.wording},
        "endpoint": {"id": ev.endpoint, "label": ev.endpoint_label},
        "summary": summary,
        "observations": observations,
        "inputs": ev.values,
        "sections": ev.sections,
        "suggestions": [
            {
                "element": s.element,
                "value": s.value,
                "algorithm": s.algorithm,
                "version": s.version,
                "outcome": s.outcome,
            }
            for s in ctx.suggestions
        ],
    }
