"""HL7 v2.5.1 ORU^R01 text for legacy RIS/EHR delivery: OBR for the study, one OBX (TX) per
report line per section and one OBX (CWE) per coded choice value. An adapter over the same
evaluation as every other output."""

from __future__ import annotations

from pair.reporting.engine import Evaluation
from pair.reporting.model import Module
from pair.reporting.outputs.context import ReportContext, coded_observations, coding

RESULT_STATUS = {"draft": "P", "final": "F", "amended": "C"}
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


def oru_r01(module: Module, ev: Evaluation, ctx: ReportContext) -> str:
    c = coding()["hl7v2"]
    ts = ctx.when.strftime("%Y%m%d%H%M%S")
    status = RESULT_STATUS.get(ctx.status, "P")
    control = f"{ctx.report_id}-{ctx.version}"
    segs = [
        f"MSH|^~\\&|{c['sending_application']}|{escape(ctx.facility)}|||{ts}||ORU^R01^ORU_R01|"
        f"{escape(control)}|P|2.5.1",
        f"PID|1||{escape(ctx.patient_id)}^^^PAIR^PN||{escape(ctx.patient_id)}^",
        f"OBR|1||{escape(ctx.accession_number or ctx.study_uid)}|"
        f"{escape(module.key)}^{escape(module.label)}^99PAIRMOD|||{escape(ctx.study_date)}"
        f"|||||||||||||||{ts}||||{status}",
    ]
    n = 0
    for section, text in ev.sections.items():
        for line in text.split("\n"):
            n += 1
            segs.append(
                f"OBX|{n}|TX|{SECTION_ID.get(section, section.upper())}^"
                f"{section.capitalize()}^99PAIR||{escape(line)}||||||{status}"
            )
    for ob in coded_observations(module, ev):
        system = (
            c["pair_coding_system"] if ob.cde_system == "pair" else c["radelement_coding_system"]
        )
        for code, name, _ in ob.codes:
            n += 1
            segs.append(
                f"OBX|{n}|CWE|{escape(ob.cde_id)}^{escape(ob.cde_name)}^{system}||"
                f"{escape(code)}^{escape(name)}^{system}||||||{status}"
            )
        if ob.kind in ("integer", "numeric"):
            n += 1
            segs.append(
                f"OBX|{n}|NM|{escape(ob.cde_id)}^{escape(ob.cde_name)}^{system}||"
                f"{ob.value}|{escape(ob.unit)}|||||{status}"
            )
    return "\r".join(segs) + "\r"
