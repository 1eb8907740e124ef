"""HL7 v2.5.1 ORU^R01 text for legacy RIS/EHR delivery: OBR for the study, one OBX (TX) per
report line per section and one OBX (CWE) per coded choice value. An adapter over the same
evaluation as every other output. An OBX whose code is an inferred RadElement code is followed
by an NTE saying so (the HL7 v2 counterpart of the FHIR verification extension); value types,
coding systems and table codes come from ``coding.yaml``."""

from __future__ import annotations

from collections.abc import Sequence

from pair.reporting.engine import Evaluation
from pair.reporting.model import Module
from pair.reporting.outputs.context import (
    CodedObservation,
    ReportContext,
    coded_observations,
    coding,
)

SECTION_ID = {
    "findings": "FINDINGS",
    "impression": "IMPRESSION",
    "recommendation": "RECOMMENDATION",
    "citation": "CITATION",
}


def escape(text: str) -> str:
    """HL7 escape sequences for the delimiters ``| ^ ~ \\ &``."""
    out = text.replace("\\", "\\E\\")
    for ch, seq in (("|", "\\F\\"), ("^", "\\S\\"), ("~", "\\R\\"), ("&", "\\T\\")):
        out = out.replace(ch, seq)
    return out


def _inferred_notes(ob: CodedObservation, codes: Sequence[tuple[str, str, str]]) -> list[str]:
    """NTE segments for the inferred codes among the OBX's observation id and value."""
    c = coding()["hl7v2"]
    inferred = [(ob.cde_id, ob.cde_name)] if ob.verification == "inferred" else []
    inferred += [(code, name) for code, name, ver in codes if ver == "inferred"]
    t = c["nte_comment_type"]
    return [
        f"NTE|{i}|{c['nte_source']}|{escape(c['inferred_note'].format(code=code, name=name))}|"
        f"{t['code']}^{escape(t['text'])}^{t['system']}"
        for i, (code, name) in enumerate(inferred, start=1)
    ]


def oru_r01(module: Module, ev: Evaluation, ctx: ReportContext) -> str:
    c = coding()["hl7v2"]
    ts = ctx.when.strftime("%Y%m%d%H%M%S")
    statuses = c["result_status"]
    status = statuses.get(ctx.status, statuses["draft"])
    tx, cwe, nm = c["value_type_text"], c["value_type_coded"], c["value_type_numeric"]
    control = f"{ctx.report_id}-{ctx.version}"
    segs = [
        f"MSH|^~\\&|{c['sending_application']}|{escape(ctx.facility)}|||{ts}||ORU^R01^ORU_R01|"
        f"{escape(control)}|P|2.5.1",
        f"PID|1||{escape(ctx.patient_id)}^^^{c['patient_id_authority']}^{c['patient_id_type']}"
        f"||{escape(ctx.patient_id)}^",
        f"OBR|1||{escape(ctx.accession_number or ctx.study_uid)}|"
        f"{escape(module.key)}^{escape(module.label)}^{c['module_coding_system']}|||{escape(ctx.study_date)}"
        f"|||||||||||||||{ts}||||{status}",
    ]
    n = 0
    for section, text in ev.sections.items():
        for line in text.split("\n"):
            n += 1
            segs.append(
                f"OBX|{n}|{tx}|{SECTION_ID.get(section, section.upper())}^"
                f"{section.capitalize()}^{c['pair_coding_system']}||{escape(line)}||||||{status}"
            )
    for ob in coded_observations(module, ev):
        system = (
            c["pair_coding_system"] if ob.cde_system == "pair" else c["radelement_coding_system"]
        )
        for value in ob.codes:
            code, name, _ = value
            n += 1
            segs.append(
                f"OBX|{n}|{cwe}|{escape(ob.cde_id)}^{escape(ob.cde_name)}^{system}||"
                f"{escape(code)}^{escape(name)}^{system}||||||{status}"
            )
            segs += _inferred_notes(ob, [value])
        if ob.kind in ("integer", "numeric"):
            n += 1
            segs.append(
                f"OBX|{n}|{nm}|{escape(ob.cde_id)}^{escape(ob.cde_name)}^{system}||"
                f"{ob.value}|{escape(ob.unit)}|||||{status}"
            )
            segs += _inferred_notes(ob, [])
    return "\r".join(segs) + "\r"
