from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import highdicom as hd
import yaml
from sqlalchemy import select

from pair.audit.models import AuditEvent, ChangeEvent
from pair.audit.service import Actor
from pair.core.errors import Conflict
from pair.reporting import service
from pair.reporting.outputs import fhir

GOLDEN = yaml.safe_load((Path(__file__).parent / "data" / "golden.yaml").read_text())
TYPICAL = GOLDEN["sentences"]["typical"]
ATYPICAL = GOLDEN["sentences"]["atypical"]
BASE = GOLDEN["ct_base"]
TYPICAL_INPUTS = {
    **BASE,
    "ggo": "present",
    "ggo_side": "bilateral",
    "ggo_location": "peripheral",
    "ggo_rounded": "absent",
}


def _create(w: Any, user: str = "rad1", **body: Any) -> Any:
    payload = {"study_uid": w.study_uid, "module": "rsna-ct-covid", **body}
    return w.client.post("/api/reports", json=payload, headers=w.h(user))


def test_modules_and_form_definition(world: Any) -> None:
    w = world
    listing = w.client.get("/api/reports/modules", headers=w.h("res1")).json()
    assert {m["id"] for m in listing} >= {"rsna-ct-covid", "rsna-cxr-covid", "corads"}
    form = w.client.get("/api/reports/modules/rsna-ct-covid", headers=w.h("res1")).json()
    side = next(e for e in form["elements"] if e["id"] == "ggo_side")
    assert side["relevant_if"] == {"equal": ["ggo", "present"]}
    assert side["choices"][2] == {
        "value": "bilateral",
        "label": "bilateral",
        "cde": "RDE1361.2",
        "report_text": None,
        "default": False,
    }
    xml = w.client.get("/api/reports/modules/corads/cards.xml", headers=w.h("res1"))
    assert xml.status_code == 200 and "<ReportingModule" in xml.text
    assert w.client.get("/api/reports/modules/nope", headers=w.h("res1")).status_code == 404
    live = w.client.post(
        "/api/reports/modules/rsna-ct-covid/evaluate",
        headers=w.h("res1"),
        json={"inputs": {"ggo": "present"}},
    ).json()
    # an incomplete draft has no category yet: nothing is previewed as if it were a finding
    assert not live["complete"] and "ggo_side" in live["missing"]
    assert live["endpoint"] == "" and live["sections"] == {}
    assert all(v is None for v in live["computed"].values())
    full = w.client.post(
        "/api/reports/modules/rsna-ct-covid/evaluate",
        headers=w.h("res1"),
        json={"inputs": TYPICAL_INPUTS},
    ).json()
    assert full["complete"] and full["sections"]["impression"] == TYPICAL + " [Cov19Typ]"
    bad = w.client.post(
        "/api/reports/modules/rsna-ct-covid/evaluate",
        headers=w.h("res1"),
        json={"inputs": {"ggo": 3}},
    )
    assert bad.status_code == 422 and bad.json()["details"][0]["element"] == "ggo"


def test_report_lifecycle(world: Any) -> None:
    w = world
    assert _create(w, "res1").status_code == 403
    assert _create(w, "rad2").status_code == 404  # other facility's study
    bad = _create(w, inputs={"ggo": "maybe"})
    assert bad.status_code == 422 and bad.json()["details"][0]["element"] == "ggo"
    created = _create(w, inputs={"ggo": "present"})
    assert created.status_code == 201, created.text
    report = created.json()
    rid = report["id"]
    assert (report["status"], report["current_version"]) == ("draft", 1)
    assert _create(w).status_code == 409  # one report per study and module

    partial = w.client.post(f"/api/reports/{rid}/preview", headers=w.h("rad1")).json()
    assert not partial["complete"] and "ggo_side" in partial["missing"]
    assert "ggo_side" in partial["relevant"]
    live = w.client.post(
        f"/api/reports/{rid}/preview", json={"inputs": TYPICAL_INPUTS}, headers=w.h("rad1")
    ).json()
    assert live["complete"] and live["endpoint"] == "typical"
    assert TYPICAL + " [Cov19Typ]" in live["narrative"]

    suggestions = [
        {"element": "ggo", "value": "present", "algorithm": "covid-ct-net", "version": "1.2"},
        {
            "element": "ggo_rounded",
            "value": "present",
            "algorithm": "covid-ct-net",
            "version": "1.2",
        },
        {
            "element": "ggo_distribution",
            "value": "lower",
            "algorithm": "covid-ct-net",
            "version": "1.2",
        },
    ]
    put = w.client.put(
        f"/api/reports/{rid}/inputs",
        headers=w.h("rad1"),
        json={"inputs": TYPICAL_INPUTS, "suggestions": suggestions},
    )
    assert put.status_code == 200, put.text
    bad_sugg = w.client.put(
        f"/api/reports/{rid}/inputs",
        headers=w.h("rad1"),
        json={"inputs": TYPICAL_INPUTS, "suggestions": [{"element": "x", "value": 1}]},
    )
    assert bad_sugg.status_code == 422

    # isolation and roles
    assert w.client.get(f"/api/reports/{rid}", headers=w.h("rad2")).status_code == 404
    assert w.client.post(f"/api/reports/{rid}/sign", headers=w.h("rad2")).status_code == 404
    assert w.client.get(f"/api/reports/{rid}/download/text", headers=w.h("rad2")).status_code == 404
    assert w.client.post(f"/api/reports/{rid}/sign", headers=w.h("adm1")).status_code == 403
    assert w.client.post(f"/api/reports/{rid}/sign", headers=w.h("res1")).status_code == 403
    assert w.client.get(f"/api/reports/{rid}", headers=w.h("res1")).status_code == 200

    signed = w.client.post(f"/api/reports/{rid}/sign", headers=w.h("rad1"))
    assert signed.status_code == 200, signed.text
    result = signed.json()
    assert (result["status"], result["version"], result["sr_stored"]) == ("final", 1, True)
    outcomes = {s["element"]: s["outcome"] for s in result["suggestions"]}
    assert outcomes == {"ggo": "accepted", "ggo_rounded": "changed", "ggo_distribution": "rejected"}
    assert len(w.stored) == 1 and w.stored[0].SOPInstanceUID == result["sr_sop_instance_uid"]
    assert (
        w.client.put(
            f"/api/reports/{rid}/inputs", headers=w.h("rad1"), json={"inputs": BASE}
        ).status_code
        == 409
    )
    assert w.client.post(f"/api/reports/{rid}/sign", headers=w.h("rad1")).status_code == 409

    text = w.client.get(f"/api/reports/{rid}/download/text", headers=w.h("rad1"))
    assert TYPICAL in text.text and "Signed by rad1" in text.text
    fhir_resp = w.client.get(f"/api/reports/{rid}/download/fhir", headers=w.h("res1"))
    assert fhir_resp.status_code == 200, fhir_resp.text
    bundle = fhir_resp.json()
    fhir.validate(bundle)
    assert bundle["entry"][0]["resource"]["status"] == "final"
    sr_bytes = w.client.get(f"/api/reports/{rid}/download/sr", headers=w.h("rad1")).content
    doc = hd.sr.srread(io.BytesIO(sr_bytes))
    assert doc.SOPInstanceUID == result["sr_sop_instance_uid"]
    assert doc.StudyInstanceUID == w.study_uid and doc.PatientID == "GH-0001"
    refs = doc.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert len(refs.ReferencedSOPSequence) == 2
    coded = json.loads(
        w.client.get(f"/api/reports/{rid}/download/coded", headers=w.h("rad1")).content
    )
    assert coded["summary"]["value"] == "typical"
    hl7 = w.client.get(f"/api/reports/{rid}/download/hl7", headers=w.h("rad1")).text
    assert hl7.startswith("MSH|") and "|F" in hl7
    assert w.client.get(f"/api/reports/{rid}/download/pdf", headers=w.h("rad1")).status_code == 404

    # amend: a new version; the signed one is unchanged
    assert (
        w.client.post(
            f"/api/reports/{rid}/amend", json={"reason": ""}, headers=w.h("rad1")
        ).status_code
        == 422
    )
    override = {
        **TYPICAL_INPUTS,
        "override_category": "atypical",
        "override_reason": "Pattern of known drug toxicity",
    }
    amended = w.client.post(
        f"/api/reports/{rid}/amend",
        headers=w.h("rad1"),
        json={"reason": "Clinical history received", "inputs": override},
    )
    assert amended.status_code == 200, amended.text
    assert amended.json()["current"]["status"] == "draft"
    assert amended.json()["status"] == "final"
    assert (
        w.client.post(
            f"/api/reports/{rid}/amend", json={"reason": "again"}, headers=w.h("rad1")
        ).status_code
        == 409
    )
    # the assigned category contradicts the findings: a 409 names both, nothing is signed
    refused = w.client.post(f"/api/reports/{rid}/sign", headers=w.h("rad1"))
    assert refused.status_code == 409, refused.text
    message = refused.json()["message"]
    assert "Atypical appearance" in message and "Typical appearance" in message
    assert refused.json()["details"]["contradiction"]["computed"] == "typical"
    result2 = w.client.post(
        f"/api/reports/{rid}/sign", headers=w.h("rad1"), json={"confirm_override": True}
    ).json()
    assert (result2["status"], result2["version"]) == ("amended", 2)
    signed_v2 = w.client.get(f"/api/reports/{rid}/versions", headers=w.h("rad1")).json()[1]
    assert "Category assigned by the radiologist: Atypical appearance" in signed_v2["text"]
    assert "(computed from findings: Typical appearance)" in signed_v2["text"]
    assert signed_v2["evaluation"]["contradiction"]["assigned"] == "atypical"
    assert signed_v2["evaluation"]["override_confirmed_by"]
    versions = w.client.get(f"/api/reports/{rid}/versions", headers=w.h("rad1")).json()
    assert [(v["version"], v["status"]) for v in versions] == [(1, "final"), (2, "amended")]
    assert TYPICAL in versions[0]["text"] and ATYPICAL in versions[1]["text"]
    assert versions[1]["amend_reason"] == "Clinical history received"
    assert versions[0]["evaluation"]["computed"]["category"] == "typical"
    v2 = w.stored[1]
    pred = v2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert pred.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == result["sr_sop_instance_uid"]
    old = w.client.get(f"/api/reports/{rid}/download/text?version=1", headers=w.h("rad1"))
    assert TYPICAL in old.text and ATYPICAL not in old.text

    with w.node.db.session() as s:
        system = Actor.system()
        rec = service.load_report(s, system, rid)
        first = rec.versions[0]
        ds = service.version_sr(first, service.context(s, rec, first))
        assert ds.SOPInstanceUID == result["sr_sop_instance_uid"]  # rebuilt identically
        assert (ds.PatientID, ds.StudyInstanceUID) == ("GH-0001", w.study_uid)
        labels = service.final_labels(s, w.facility["a"])
        assert len(labels) == 1
        label = labels[0]
        assert (label.study_uid, label.version, label.summary_value) == (w.study_uid, 2, "atypical")
        assert label.summary_code == "RDE1359.2"
        assert label.codes["RDE1360"] == "RDE1360.1"
        assert service.final_labels(s, w.facility["b"]) == []
        actions = {e.action for e in s.scalars(select(AuditEvent))}
        assert {"report.create", "report.sign", "report.amend", "report.download"} <= actions
        kinds = [
            c.kind
            for c in s.scalars(select(ChangeEvent).where(ChangeEvent.object_type == "report"))
        ]
        assert kinds.count("report.signed") == 2
        assert kinds.count("report.draft") == 1 and kinds.count("report.amending") == 1


def test_drafts_are_not_labels_and_sr_needs_images(world: Any) -> None:
    w = world
    r = w.client.post(
        "/api/reports",
        headers=w.h("rad1"),
        json={"study_uid": w.empty_study_uid, "module": "corads", "inputs": {"corads": "5"}},
    ).json()
    with w.node.db.session() as s:
        assert service.final_labels(s, None) == []
    assert (
        w.client.get(f"/api/reports/{r['id']}/download/fhir", headers=w.h("rad1")).status_code
        == 200
    )
    signed = w.client.post(f"/api/reports/{r['id']}/sign", headers=w.h("rad1")).json()
    assert signed["sr_stored"] is False and "no stored images" in signed["sr_error"]
    with w.node.db.session() as s:
        labels = service.final_labels(s, None)
        assert [(x.module_id, x.summary_value, x.summary_code) for x in labels] == [
            ("corads", "5", "PAIR-RDE9.5")
        ]
    incomplete = w.client.post(
        "/api/reports",
        headers=w.h("rad1"),
        json={"study_uid": w.empty_study_uid, "module": "ct-severity-25", "inputs": {"rul": 2}},
    ).json()
    sign = w.client.post(f"/api/reports/{incomplete['id']}/sign", headers=w.h("rad1"))
    assert sign.status_code == 422 and "rml: required" in sign.json()["message"]
    fhir_draft = w.client.get(f"/api/reports/{incomplete['id']}/download/fhir", headers=w.h("rad1"))
    assert fhir_draft.status_code == 422


def test_failed_store_leaves_report_signed(world: Any) -> None:
    w = world
    rid = _create(w, inputs=BASE).json()["id"]
    with w.node.db.session() as s:
        user_id = s.scalar(select(AuditEvent.user_id).where(AuditEvent.user_name == "rad1"))
    actor = Actor(user_id, "rad1", w.facility["a"], "radiologist", "test")

    def refuse(ds: Any) -> None:
        raise Conflict("repository is read-only")

    result = service.sign_and_store(w.node, actor, rid, refuse)
    assert result.status == "final" and not result.sr_stored
    assert result.sr_error == "repository is read-only"
    with w.node.db.session() as s:
        report = service.load_report(s, actor, rid)
        assert report.versions[0].signed_at is not None and not report.versions[0].sr_stored


def test_signed_sr_goes_to_the_real_repository_store(world: Any) -> None:
    """Without the test override the sign endpoint stores the SR through the repository's
    ingest: it is indexed under the report's study and its bytes in the content store are
    the SR the API exports, a valid Comprehensive SR with the inferred-code markers."""
    import pydicom

    from pair.reporting.api import get_sr_store
    from pair.repository.ingest import content_store
    from pair.repository.models import Instance, Series, Study

    w = world
    w.client.app.dependency_overrides.pop(get_sr_store)
    rid = _create(w, inputs=TYPICAL_INPUTS).json()["id"]
    signed = w.client.post(f"/api/reports/{rid}/sign", headers=w.h("rad1"))
    assert signed.status_code == 200, signed.text
    result = signed.json()
    assert result["sr_stored"] is True, result
    assert w.stored == []  # the test store was not used
    uid = result["sr_sop_instance_uid"]

    exported = w.client.get(f"/api/reports/{rid}/download/sr", headers=w.h("rad1"))
    assert exported.status_code == 200
    with w.node.db.session() as s:
        inst, study_uid, facility_id = s.execute(
            select(Instance, Study.study_uid, Study.facility_id)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .where(Instance.sop_instance_uid == uid)
        ).one()
        path, source = inst.storage_path, inst.source
    assert (study_uid, facility_id, source) == (w.study_uid, w.facility["a"], "report")
    stored = content_store(w.node).read(path)
    doc = hd.sr.srread(io.BytesIO(stored))
    assert doc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
    assert (doc.SOPInstanceUID, doc.StudyInstanceUID) == (uid, w.study_uid)
    assert (doc.CompletionFlag, doc.VerificationFlag) == ("COMPLETE", "VERIFIED")
    assert doc.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    again = pydicom.dcmread(io.BytesIO(exported.content))
    assert again.SOPInstanceUID == uid
    assert again.ContentSequence == pydicom.dcmread(io.BytesIO(stored)).ContentSequence
    assert b"PAIR-INFERRED" in stored
