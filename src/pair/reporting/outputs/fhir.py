"""FHIR R4 Bundle: one DiagnosticReport, one Observation per coded element, the module's
summary element as the category Observation (with the findings as ``hasMember``).

Built as plain JSON and validated with ``fhir.resources.R4B`` (fhir.resources 7+ defaults to
R5; DiagnosticReport and Observation are unchanged between R4 and R4B).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

from pydantic import ValidationError

from pair.core.errors import Invalid
from pair.reporting.engine import Evaluation
from pair.reporting.model import Module
from pair.reporting.outputs.context import (
    CodedObservation,
    ReportContext,
    coded_observations,
    coding,
)
from pair.reporting.outputs.text import narrative

FHIR_STATUS = {"draft": "preliminary", "final": "final", "amended": "amended"}
UCUM = {"%": "%", "L": "L", "cm3": "cm3", "mm": "mm"}


def _uuid(ctx: ReportContext, name: str) -> str:
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"urn:pair:report:{ctx.report_id}:{ctx.version}:{name}")
    )


def _coding(code: str, display: str, verification: str, pair: bool) -> dict[str, Any]:
    c = coding()["fhir"]
    out: dict[str, Any] = {
        "system": c["pair_cde_system"] if pair else c["radelement_system"],
        "code": code,
        "display": display,
    }
    out["extension"] = [{"url": c["verification_extension"], "valueCode": verification}]
    return out


def _study_ref(ctx: ReportContext) -> dict[str, Any]:
    c = coding()["fhir"]
    return {
        "type": "ImagingStudy",
        "identifier": {"system": c["dicom_uid_system"], "value": f"urn:oid:{ctx.study_uid}"},
    }


def _observation(ob: CodedObservation, ctx: ReportContext, status: str) -> dict[str, Any]:
    c = coding()["fhir"]
    pair = ob.cde_system == "pair"
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": _uuid(ctx, ob.element),
        "status": status,
        "category": [
            {
                "coding": [
                    {"system": c["observation_category"], "code": "imaging", "display": "Imaging"}
                ]
            }
        ],
        "code": {
            "coding": [_coding(ob.cde_id, ob.cde_name, ob.verification, pair)],
            "text": ob.label,
        },
        "subject": {"identifier": {"system": c["pseudonym_system"], "value": ctx.patient_id}},
        "effectiveDateTime": _effective(ctx),
        "derivedFrom": [_study_ref(ctx)],
    }
    if ob.kind == "choice" and ob.codes:
        code, name, ver = ob.codes[0]
        res["valueCodeableConcept"] = {
            "coding": [_coding(code, name, ver, pair)],
            "text": ob.display,
        }
    elif ob.kind == "multichoice":
        res["component"] = [
            {
                "code": {"coding": [_coding(ob.cde_id, ob.cde_name, ob.verification, pair)]},
                "valueCodeableConcept": {"coding": [_coding(code, name, ver, pair)], "text": name},
            }
            for code, name, ver in ob.codes
        ]
    elif ob.kind == "integer" and not ob.unit:
        res["valueInteger"] = int(ob.value)
    elif ob.kind in ("integer", "numeric"):
        res["valueQuantity"] = {
            "value": ob.value,
            "unit": ob.unit,
            "system": c["ucum"],
            "code": UCUM.get(ob.unit, ob.unit),
        }
    suggestion = next((s for s in ctx.suggestions if s.element == ob.element), None)
    if suggestion is not None and suggestion.outcome in ("accepted", ""):
        res["device"] = {"display": f"{suggestion.algorithm} {suggestion.version}"}
        res["extension"] = [
            {
                "url": c["provenance_extension"],
                "valueString": f"{suggestion.algorithm} {suggestion.version}: "
                f"{suggestion.outcome or 'suggested'}",
            }
        ]
    return res


def _effective(ctx: ReportContext) -> str:
    d = ctx.study_date
    if len(d) == 8 and d.isdigit():
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"
    return ctx.when.date().isoformat()


def bundle(module: Module, ev: Evaluation, ctx: ReportContext) -> dict[str, Any]:
    """The validated Bundle as JSON-ready dict (type: collection)."""
    c = coding()["fhir"]
    status = FHIR_STATUS.get(ctx.status, "preliminary")
    obs = coded_observations(module, ev)
    resources = {ob.element: _observation(ob, ctx, status) for ob in obs}
    order = list(resources)
    summary = module.summary_element
    if summary in resources:
        category = resources[summary]
        category["hasMember"] = [
            {"reference": f"urn:uuid:{resources[k]['id']}"} for k in order if k != summary
        ]
        reason = ev.values.get("override_reason")
        if reason:
            category["note"] = [{"text": f"Category assigned by the radiologist: {reason}"}]
        order = [summary] + [k for k in order if k != summary]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": _uuid(ctx, "report"),
        "identifier": [
            {"system": c["report_identifier_system"], "value": f"{ctx.report_id}/v{ctx.version}"}
        ],
        "status": status,
        "category": [{"coding": [{"system": c["loinc"], **c["report_category"]}]}],
        "code": {
            "coding": [
                {"system": c["pair_module_system"], "code": module.key, "display": module.label}
            ],
            "text": module.label,
        },
        "subject": {"identifier": {"system": c["pseudonym_system"], "value": ctx.patient_id}},
        "effectiveDateTime": _effective(ctx),
        "issued": ctx.when.isoformat(),
        "imagingStudy": [_study_ref(ctx)],
        "result": [{"reference": f"urn:uuid:{resources[k]['id']}"} for k in order],
        "conclusion": ev.sections.get("impression", ""),
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "language": "en",
                "title": module.label,
                "data": base64.b64encode(narrative(module, ev, ctx).encode()).decode(),
            }
        ],
    }
    if ctx.author:
        report["resultsInterpreter"] = [{"display": ctx.author}]
    entries = [{"fullUrl": f"urn:uuid:{report['id']}", "resource": report}]
    entries += [
        {"fullUrl": f"urn:uuid:{resources[k]['id']}", "resource": resources[k]} for k in order
    ]
    data = {
        "resourceType": "Bundle",
        "id": _uuid(ctx, "bundle"),
        "type": "collection",
        "timestamp": ctx.when.isoformat(),
        "entry": entries,
    }
    validate(data)
    return data


def validate(data: dict[str, Any]) -> None:
    """Validate against the R4B models; raise Invalid listing every problem."""
    from fhir.resources.R4B.bundle import Bundle

    try:
        Bundle.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise Invalid(
            "FHIR Bundle is not valid R4: " + "; ".join(problems), details=problems
        ) from None
