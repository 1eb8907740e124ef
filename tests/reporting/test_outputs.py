from __future__ import annotations

import base64
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import highdicom as hd
import pytest
import yaml

from pair.core import fastpaths
from pair.core.errors import Invalid
from pair.reporting.engine import evaluate
from pair.reporting.loader import get_module
from pair.reporting.outputs import fhir, hl7v2, sr, text
from pair.reporting.outputs.context import EvidenceInstance, ReportContext, Suggestion

GOLDEN = yaml.safe_load((Path(__file__).parent / "data" / "golden.yaml").read_text())
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def ctx(**kw: Any) -> ReportContext:
    base: dict[str, Any] = dict(
        study_uid="1.2.826.0.1.3680043.8.498.1",
        patient_id="GH-0001",
        report_id="42",
        status="final",
        author="Doe^Jane",
        facility="General Hospital",
        study_date="20200401",
        signed_at=datetime(2020, 4, 2, 10, 30, tzinfo=UTC),
        modality="CT",
        evidence=[
            EvidenceInstance(
                "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3", CT_IMAGE, "CT"
            )
        ],
    )
    base.update(kw)
    return ReportContext(**base)


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_fhir_bundle_validates_for_every_golden_case(case: dict[str, Any]) -> None:
    m = get_module(case["module"])
    ev = evaluate(m, case["inputs"])
    b = fhir.bundle(m, ev, ctx())
    report = b["entry"][0]["resource"]
    obs = [e["resource"] for e in b["entry"][1:]]
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "final"
    assert report["conclusion"] == ev.sections["impression"]
    assert len(report["result"]) == len(obs) > 0
    assert report["imagingStudy"][0]["identifier"]["value"] == "urn:oid:1.2.826.0.1.3680043.8.498.1"
    summary = obs[0]
    if m.summary_element:
        code = m.element(m.summary_element).cde
        assert summary["code"]["coding"][0]["code"] == code
    body = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    assert ev.sections["impression"] in body


def test_fhir_codes_and_verification_status() -> None:
    case = next(c for c in GOLDEN["cases"] if c["name"] == "ct radiologist override with reason")
    m = get_module("rsna-ct-covid")
    b = fhir.bundle(
        m,
        evaluate(m, case["inputs"]),
        ctx(suggestions=[Suggestion("ggo", "present", "covid-ct-seg", "2.1", "accepted")]),
    )
    obs = {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in b["entry"][1:]}
    category = obs["RDE1359"]
    assert category["valueCodeableConcept"]["coding"][0]["code"] == "RDE1359.2"  # atypical
    assert category["code"]["coding"][0]["system"] == "http://radelement.org"
    assert category["code"]["coding"][0]["extension"][0]["valueCode"] == "inferred"
    assert "Known drug toxicity pattern" in category["note"][0]["text"]
    assert len(category["hasMember"]) == len(obs) - 1
    assert obs["PAIR-RDE8"]["code"]["coding"][0]["system"] == "urn:pair:cde"
    assert obs["RDE1360"]["device"]["display"] == "covid-ct-seg 2.1"
    sev = get_module("ct-severity-25")
    b = fhir.bundle(
        sev, evaluate(sev, {"rul": 1, "rml": 1, "rll": 1, "lul": 1, "lll": 1}), ctx(status="draft")
    )
    total = next(
        e["resource"]
        for e in b["entry"][1:]
        if e["resource"]["code"]["coding"][0]["code"] == "PAIR-RDE19"
    )
    assert total["valueInteger"] == 5 and total["status"] == "preliminary"
    cxr = get_module("rsna-cxr-covid")
    b = fhir.bundle(
        cxr, evaluate(cxr, {"opacities": "present", "distribution": ["rounded", "central"]}), ctx()
    )
    dist = next(
        e["resource"]
        for e in b["entry"][1:]
        if e["resource"]["code"]["coding"][0]["code"] == "PAIR-RDE12"
    )
    assert [c["valueCodeableConcept"]["coding"][0]["code"] for c in dist["component"]] == [
        "PAIR-RDE12.1",
        "PAIR-RDE12.4",
    ]


def test_fhir_validation_rejects_bad_resources() -> None:
    m = get_module("corads")
    b = fhir.bundle(m, evaluate(m, {"corads": "4"}), ctx())
    del b["entry"][0]["resource"]["code"]  # required 1..1
    b["entry"][1]["resource"]["valueInteger"] = "many"
    b["entry"][1]["resource"]["colour"] = "blue"  # not an R4 element
    with pytest.raises(Invalid, match="FHIR Bundle is not valid R4") as err:
        fhir.validate(b)
    assert len(err.value.details) >= 3


def _reread(ds: Any) -> hd.sr.ComprehensiveSR:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return hd.sr.srread(buf)


def test_sr_reread_with_codes_and_references() -> None:
    case = next(c for c in GOLDEN["cases"] if c["name"] == "ct typical bilateral peripheral GGO")
    m = get_module("rsna-ct-covid")
    c = ctx(suggestions=[Suggestion("ggo", "present", "covid-ct-seg", "2.1", "accepted")])
    doc = _reread(sr.build_sr(m, evaluate(m, case["inputs"]), c))
    assert doc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert doc.StudyInstanceUID == c.study_uid and doc.PatientID == "GH-0001"
    assert (doc.CompletionFlag, doc.VerificationFlag) == ("COMPLETE", "VERIFIED")
    assert doc.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    evidence = doc.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == c.study_uid
    sop = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert sop.ReferencedSOPInstanceUID == c.evidence[0].sop_instance_uid
    group = doc.content.get_image_measurement_groups()[0]
    pairs = {
        (q.name.value, q.value.value, q.value.scheme_designator)
        for q in group.get_qualitative_evaluations()
    }
    assert ("RDE1360", "RDE1360.1", "99RADELEMENT") in pairs  # GGO present
    assert ("RDE1359", "RDE1359.1", "99RADELEMENT") in pairs  # category typical
    assert ("PAIR-RDE2", "PAIR-RDE2.1", "99PAIR") in pairs  # crazy-paving present
    assert group.source_images[0].referenced_sop_instance_uid == c.evidence[0].sop_instance_uid
    names = [str(i.ConceptNameCodeSequence[0].CodeMeaning) for i in group[0].ContentSequence]
    assert "Algorithm Name" in names
    # the same report version always gives the same SR instance
    again = sr.build_sr(m, evaluate(m, case["inputs"]), c)
    assert again.SOPInstanceUID == doc.SOPInstanceUID


def test_sr_measurements_draft_and_amendment() -> None:
    m = get_module("cxr-severity-mrale")
    ev = evaluate(m, {"extent_right": 2, "density_right": 3, "extent_left": 0})
    draft = _reread(
        sr.build_sr(
            m,
            ev,
            ctx(
                status="draft",
                modality="DX",
                evidence=[
                    EvidenceInstance("1.2.3.9", "1.2.3.9.1", "1.2.840.10008.5.1.4.1.1.1.1", "DX")
                ],
            ),
        )
    )
    assert (draft.CompletionFlag, draft.VerificationFlag) == ("PARTIAL", "UNVERIFIED")
    values = {
        x.name.value: x.value
        for x in draft.content.get_image_measurement_groups()[0].get_measurements()
    }
    assert values == {"PAIR-RDE29": 2, "PAIR-RDE31": 3, "PAIR-RDE30": 0, "PAIR-RDE33": 6}
    v1 = sr.build_sr(m, ev, ctx())
    v2 = sr.build_sr(m, ev, ctx(version=2, status="amended"), previous=[v1])
    assert v2.SOPInstanceUID != v1.SOPInstanceUID and v2.SeriesInstanceUID == v1.SeriesInstanceUID
    pred = v2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == v1.SOPInstanceUID
    with pytest.raises(Invalid, match="no stored instances"):
        sr.build_sr(m, ev, ctx(evidence=[]))


def test_text_coded_json_and_hl7() -> None:
    m = get_module("rsna-ct-covid")
    case = next(c for c in GOLDEN["cases"] if c["name"] == "ct negative")
    ev = evaluate(m, case["inputs"])
    c = ctx()
    narrative = text.narrative(m, ev, c)
    assert "IMPRESSION:\nNo CT findings present to indicate pneumonia." in narrative
    assert "Signed by Doe^Jane 2020-04-02 10:30 UTC" in narrative
    data = text.coded_json(m, ev, c)
    assert data["summary"]["value_codes"][0] == {
        "code": "RDE1359.0",
        "name": "negative",
        "verification": "inferred",
    }
    assert data["module"] == {"id": "rsna-ct-covid", "version": "1.0.0", "wording": "verified"}
    assert all(o["cde"]["id"] for o in data["observations"])
    msg = hl7v2.oru_r01(m, ev, c)
    segs = msg.rstrip("\r").split("\r")
    assert segs[0].startswith("MSH|^~\\&|PAIR|General Hospital|||20200402103000||ORU^R01")
    assert any(
        s.startswith("OBX|") and "|TX|IMPRESSION^Impression^99PAIR||No CT findings" in s
        for s in segs
    )
    assert any("|CWE|RDE1359^Classification^99RDE||RDE1359.0^negative^99RDE" in s for s in segs)
    assert hl7v2.escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"


def test_sr_is_read_by_dcmtk_without_warnings(tmp_path: Path) -> None:
    """An independent reader: DCMTK's dsrdump parses the SR and checks its content items."""
    import subprocess

    m = get_module("rsna-ct-covid")
    case = next(c for c in GOLDEN["cases"] if c["name"] == "ct radiologist override with reason")
    path = tmp_path / "report.dcm"
    evidence = [  # two series, odd and even UID lengths: the directly encoded evidence path
        EvidenceInstance("1.2.3.4.5", "1.2.3.4.5.1", CT_IMAGE, "CT"),
        EvidenceInstance("1.2.3.4.5", "1.2.3.4.5.22", CT_IMAGE, "CT"),
        EvidenceInstance("1.2.3.4.66", "1.2.3.4.66.1", CT_IMAGE, "CT"),
    ]
    c = ctx(evidence=evidence)
    sr.build_sr(m, evaluate(m, case["inputs"]), c).save_as(path, enforce_file_format=True)
    run = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "W:" not in run.stderr and "E:" not in run.stderr
    assert "Comprehensive SR Document" in run.stdout
    assert '(RDE1359.2,99RADELEMENT,"atypical pattern")' in run.stdout
    assert '(PAIR-RDE8.3,99PAIR,"atypical")' in run.stdout
    doc = hd.sr.srread(path)
    study = doc.CurrentRequestedProcedureEvidenceSequence[0]
    assert study.StudyInstanceUID == c.study_uid
    got = {
        s.SeriesInstanceUID: [r.ReferencedSOPInstanceUID for r in s.ReferencedSOPSequence]
        for s in study.ReferencedSeriesSequence
    }
    assert got == {"1.2.3.4.5": ["1.2.3.4.5.1", "1.2.3.4.5.22"], "1.2.3.4.66": ["1.2.3.4.66.1"]}
    assert all(
        r.ReferencedSOPClassUID == CT_IMAGE
        for s in study.ReferencedSeriesSequence
        for r in s.ReferencedSOPSequence
    )


def _comparable(ds: Any) -> Any:
    """The SR as written and re-read, with its creation timestamps fixed."""
    import pydicom

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    out = pydicom.dcmread(buf)
    for kw, value in (
        ("ContentDate", "20000101"),
        ("ContentTime", "000000"),
        ("InstanceCreationDate", "20000101"),
        ("InstanceCreationTime", "000000"),
    ):
        if kw in out:
            setattr(out, kw, value)
    for item in out.get("VerifyingObserverSequence", []):
        item.VerificationDateTime = "20000101000000"
    for item in out.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = "20000101000000"
    return out


SR_CONTEXTS = {
    "final, one image, accepted AI value": ctx(
        suggestions=[Suggestion("ggo", "present", "covid-ct-seg", "2.1", "accepted")]
    ),
    "draft without author": ctx(status="draft", author="", facility=""),
    "amended, three images in two series": ctx(
        version=2,
        status="amended",
        evidence=[
            EvidenceInstance("1.2.3.4.5", "1.2.3.4.5.1", CT_IMAGE, "CT"),
            EvidenceInstance("1.2.3.4.5", "1.2.3.4.5.22", CT_IMAGE, "CT"),
            EvidenceInstance("1.2.3.4.66", "1.2.3.4.66.1", CT_IMAGE, "CT"),
        ],
    ),
}


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_sr_equals_highdicom_constructor_output(
    case: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_sr skips the re-parsing and searches inside highdicom's ComprehensiveSR
    constructor; the document must be exactly what the plain constructor makes of the
    same content tree and attributes (timestamps aside), and what build_sr makes with the
    fast paths switched off (the evidence sequence then built as pydicom datasets)."""
    m = get_module(case["module"])
    ev = evaluate(m, case["inputs"])
    for name, c in SR_CONTEXTS.items():
        previous = [sr.build_sr(m, ev, ctx())] if c.status == "amended" else []
        fast = sr.build_sr(m, ev, c, previous)
        evidence = sr.evidence_datasets(c, limit=1)
        plain = hd.sr.ComprehensiveSR(
            evidence=evidence,
            content=sr.measurement_report(m, ev, c, evidence),
            **sr.document_attributes(m, c, previous),
        )
        if len(c.evidence) > 1:
            plain[sr.EVIDENCE_TAG] = sr._evidence_element(c)
        monkeypatch.setattr(fastpaths, "_enabled", False)
        library = sr.build_sr(m, ev, c, previous)
        monkeypatch.setattr(fastpaths, "_enabled", True)
        assert not isinstance(library, sr._ComprehensiveSR), name
        a, b, lib = _comparable(fast), _comparable(plain), _comparable(library)
        assert list(a.keys()) == list(b.keys()) == list(lib.keys()), name
        assert a == b == lib, name
        # the in-memory document reads like a parsed one
        groups = fast.content.get_image_measurement_groups()
        assert len(groups) == 1
        assert len(groups[0].get_qualitative_evaluations()) + len(
            groups[0].get_measurements()
        ) == sum(max(1, len(o.codes)) for o in sr.coded_observations(m, ev))


def _inferred_codes(m: Any, ev: Any) -> set[str]:
    """Every RadElement code in the report whose catalog status is 'inferred'."""
    from pair.reporting.outputs.context import coded_observations

    out = set()
    for ob in coded_observations(m, ev):
        if ob.verification == "inferred":
            out.add(ob.cde_id)
        out |= {code for code, _, ver in ob.codes if ver == "inferred"}
    return out


def _markers(item: Any) -> list[tuple[set[str], str]]:
    """(codes of the item carrying it, marked code) for every PAIR-INFERRED modifier."""
    out = []
    for child in item.get("ContentSequence", []):
        name = child.ConceptNameCodeSequence[0]
        if child.RelationshipType == "HAS CONCEPT MOD" and name.CodeValue == "PAIR-INFERRED":
            assert name.CodingSchemeDesignator == "99PAIR" and child.ValueType == "CODE"
            own = {item.ConceptNameCodeSequence[0].CodeValue}
            own |= {c.CodeValue for c in item.get("ConceptCodeSequence", [])}
            out.append((own, str(child.ConceptCodeSequence[0].CodeValue)))
        out += _markers(child)
    return out


@pytest.mark.parametrize("name", ["ct radiologist override with reason", "ct negative"])
def test_sr_marks_inferred_radelement_codes(name: str) -> None:
    """Each inferred code gets a HAS CONCEPT MOD child naming it; verified codes get none."""
    import pydicom

    case = next(c for c in GOLDEN["cases"] if c["name"] == name)
    m = get_module("rsna-ct-covid")
    ev = evaluate(m, case["inputs"])
    expected = _inferred_codes(m, ev)
    assert "RDE1359" in expected
    buf = io.BytesIO()
    sr.build_sr(m, ev, ctx()).save_as(buf, enforce_file_format=True)
    buf.seek(0)
    markers = _markers(pydicom.dcmread(buf))
    assert {code for _, code in markers} == expected
    assert all(code in own for own, code in markers)  # on the item that carries the code


def test_sr_with_inferred_markers_passes_dsrdump(tmp_path: Path) -> None:
    import subprocess

    m = get_module("rsna-ct-covid")
    case = next(c for c in GOLDEN["cases"] if c["name"] == "ct negative")
    path = tmp_path / "report.dcm"
    sr.build_sr(m, evaluate(m, case["inputs"]), ctx()).save_as(path, enforce_file_format=True)
    run = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "W:" not in run.stderr and "E:" not in run.stderr
    marker = '(,,"Inferred RadElement code")'  # dsrdump prints a concept name by meaning
    assert f'has concept mod CODE:{marker}=(RDE1359.0,99RADELEMENT,"negative")' in run.stdout


def test_hl7_marks_inferred_radelement_codes() -> None:
    m = get_module("rsna-ct-covid")
    case = next(c for c in GOLDEN["cases"] if c["name"] == "ct radiologist override with reason")
    ev = evaluate(m, case["inputs"])
    segs = hl7v2.oru_r01(m, ev, ctx()).rstrip("\r").split("\r")
    noted: dict[str, list[str]] = {}
    last = ""
    for s in segs:
        f = s.split("|")
        if f[0] == "OBX":
            last = s
        elif f[0] == "NTE":
            assert f[2] == "L" and f[4] == "RE^Remark^HL70364"
            assert "is an inferred RadElement code" in f[3]
            noted.setdefault(f[3].split(" ", 1)[0], []).append(last)
    assert set(noted) == _inferred_codes(m, ev)
    # the note follows the OBX that carries the code
    assert all(code in obx for code, obxs in noted.items() for obx in obxs)
    assert not any(code.startswith("PAIR-") for code in noted)


def test_sr_fast_path_switch_and_logged_fallback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PAIR_FAST_PATHS off: the fast SR build is never called. On, a fast build that raises
    gives highdicom's document and exactly one WARNING naming the path and exception type."""
    m = get_module(GOLDEN["cases"][0]["module"])
    ev = evaluate(m, GOLDEN["cases"][0]["inputs"])
    c = SR_CONTEXTS["amended, three images in two series"]
    calls: list[object] = []
    real = sr._build_sr_fast

    def spy(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(sr, "_build_sr_fast", spy)
    monkeypatch.setattr(fastpaths, "_enabled", False)
    expected = _comparable(sr.build_sr(m, ev, c))
    assert calls == []
    monkeypatch.setattr(fastpaths, "_enabled", True)
    sr.build_sr(m, ev, c)
    assert len(calls) == 1

    def broken(*args: Any) -> Any:
        raise KeyError("1.2.826.0.1.3680043.8.498.1")  # a value that must not be logged

    monkeypatch.setattr(sr, "_build_sr_fast", broken)
    with caplog.at_level("WARNING"):
        doc = sr.build_sr(m, ev, c)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in warnings] == [
        "fast path sr_document failed (KeyError); using the library path"
    ]
    assert _comparable(doc) == expected
