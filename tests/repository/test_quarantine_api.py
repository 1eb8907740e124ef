"""Residual PHI quarantines an instance; an admin of its facility reviews it (element names,
masked values, a preview) and removes the elements, re-runs de-identification with the strict
profile, or rejects it. There is no plain release: what gets stored is scanned again."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from pair.core.node import Node
from pair.repository import ingest
from pair.repository.models import QuarantineItem
from tests.conftest import admin_test_client
from tests.factories import ct_instance, to_bytes

NAME = "JOHNATHAN"  # the patient's given name (tests.factories.FAKE_PATIENT)
SAFE_PRIVATE = (
    "options: {retain_longitudinal_modified_dates: true, retain_patient_characteristics: true,"
    " retain_safe_private: true}"
)


def _leaky_private() -> Dataset:
    """The name in a private element the Retain Safe Private list keeps (GEMS_ACQU_01 0x18)."""
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00191018, "LO", NAME)
    return ds


def _leaky_body_part() -> Dataset:
    """The name in Body Part Examined, which even the Basic Profile keeps."""
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    ds.BodyPartExamined = NAME
    return ds


def _upload(client: TestClient, h: dict[str, dict[str, str]], ds: Dataset) -> dict[str, Any]:
    files = [("files", ("leaky.dcm", to_bytes(ds), "application/dicom"))]
    r = client.post("/api/upload", files=files, headers=h["dm"])
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    return dict(item)


def _quarantined(client: TestClient, h: dict[str, dict[str, str]], ds: Dataset) -> int:
    assert _upload(client, h, ds)["outcome"] == "quarantined"
    items = client.get("/api/quarantine", headers=h["admin"]).json()
    return int(items[0]["id"])


def _set_profile(client: TestClient, h: dict[str, dict[str, str]], text: str) -> None:
    r = client.put(
        "/api/deid/profile", content=text, headers={**h["admin"], "Content-Type": "text/plain"}
    )
    assert r.status_code == 200, r.text


def _served(client: TestClient, h: dict[str, dict[str, str]], study: str) -> bytes:
    """Everything WADO-RS serves of the study: the instances and their metadata."""
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    r = client.get(f"/dicomweb/studies/{study}", headers={**h["admin"], **accept})
    assert r.status_code == 200, r.text
    meta = client.get(f"/dicomweb/studies/{study}/metadata", headers=h["admin"])
    assert meta.status_code == 200
    return r.content + meta.content


def test_release_is_gone_and_remove_and_store_serves_no_phi(node: Node) -> None:
    client, h = admin_test_client(node)
    _set_profile(client, h, SAFE_PRIVATE)
    item_id = _quarantined(client, h, _leaky_private())
    for path in (f"/api/quarantine/{item_id}/release", f"/admin/quarantine/{item_id}/release"):
        assert client.post(path, json={}, headers=h["admin"]).status_code in (404, 405)

    review = client.get(f"/api/quarantine/{item_id}", headers=h["admin"])
    assert review.status_code == 200, review.text
    assert NAME not in review.text and NAME.lower() not in review.text.lower()
    (element,) = review.json()["elements"]
    assert element["path"] == "(0019,1018)" and element["source"] == "PatientName"
    assert element["private_creator"] == "GEMS_ACQU_01" and element["name"]
    assert element["masked_value"] == "J" + "*" * (len(NAME) - 1)
    assert review.json()["original_kept"] is True

    r = client.post(
        f"/api/quarantine/{item_id}/remove-and-store", json={"note": "ok"}, headers=h["admin"]
    )
    assert r.status_code == 200, r.text
    decision = r.json()
    assert decision["outcome"] == "stored"
    served = _served(client, h, decision["study_uid"])
    assert NAME.encode() not in served and b"GEMS_ACQU_01" not in served
    item = client.get(f"/api/quarantine/{item_id}", headers=h["admin"]).json()
    assert item["status"] == "stored" and item["original_kept"] is False
    preview = client.get(f"/api/quarantine/{item_id}/preview.png", headers=h["admin"])
    assert preview.status_code == 404  # decided: the held file is kept but never served
    with node.db.session() as s:
        row = s.get(QuarantineItem, item_id)
        assert row is not None and row.original_path is None  # the as-received copy is gone
        held = row.storage_path
    ingest.reconcile(node)  # start-up repair keeps it too
    assert ingest.quarantine_store(node).path(held).exists()  # kept, for audit
    actions = {a["action"] for a in client.get("/api/audit", headers=h["admin"]).json()}
    assert {"quarantine.review", "quarantine.remove_and_store"} <= actions


def test_rerun_and_store_with_the_strict_profile(node: Node) -> None:
    client, h = admin_test_client(node)
    _set_profile(client, h, SAFE_PRIVATE)
    ds = _leaky_private()
    ds.StationName = "SGHCT01A"
    item_id = _quarantined(client, h, ds)
    r = client.post(f"/api/quarantine/{item_id}/rerun-and-store", json={}, headers=h["admin"])
    assert r.status_code == 200, r.text
    decision = r.json()
    assert decision["outcome"] == "stored"
    served = _served(client, h, decision["study_uid"])
    assert NAME.encode() not in served and b"SGHCT01A" not in served
    assert b"Springfield" not in served and b"MRN0042424" not in served


def test_a_result_that_still_holds_phi_stays_quarantined(node: Node) -> None:
    client, h = admin_test_client(node)
    item_id = _quarantined(client, h, _leaky_body_part())
    # the strict profile keeps Body Part Examined too: the re-scan finds the name again
    r = client.post(f"/api/quarantine/{item_id}/rerun-and-store", json={}, headers=h["admin"])
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "quarantined" and r.json()["reasons"]
    review = client.get(f"/api/quarantine/{item_id}", headers=h["admin"]).json()
    assert review["status"] == "pending"
    assert [e["keyword"] for e in review["elements"]] == ["BodyPartExamined"]
    assert client.get("/dicomweb/studies", headers=h["admin"]).status_code == 204  # none
    # removing a different element than the flagged one is refused
    r = client.post(
        f"/api/quarantine/{item_id}/remove-and-store",
        json={"paths": ["(0008,0060)"]},
        headers=h["admin"],
    )
    assert r.status_code == 422
    r = client.post(
        f"/api/quarantine/{item_id}/remove-and-store",
        json={"paths": ["(0018,0015)"]},
        headers=h["admin"],
    )
    assert r.json()["outcome"] == "stored"
    assert NAME.encode() not in _served(client, h, r.json()["study_uid"])


def test_reject_and_facility_scope(node: Node) -> None:
    client, h = admin_test_client(node)
    item_id = _quarantined(client, h, _leaky_body_part())
    png = client.get(f"/api/quarantine/{item_id}/preview.png", headers=h["admin"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    base = f"/api/quarantine/{item_id}"
    for who, status in (("adminb", 404), ("dm", 403)):
        assert client.get(base, headers=h[who]).status_code == status
        assert client.get(f"{base}/preview.png", headers=h[who]).status_code == status
        for action in ("remove-and-store", "rerun-and-store", "reject"):
            r = client.post(f"{base}/{action}", json={}, headers=h[who])
            assert r.status_code == status, (who, action)
    assert client.get("/api/quarantine", headers=h["adminb"]).json() == []
    with node.db.session() as s:
        row = s.get(QuarantineItem, item_id)
        assert row is not None and row.status == "pending"
        files = [row.storage_path, row.original_path]
    ingest.reconcile(node)  # start-up repair keeps a pending item's files
    qstore = ingest.quarantine_store(node)
    assert all(p and qstore.path(p).exists() for p in files)
    r = client.post(f"{base}/reject", json={"note": "burned-in name"}, headers=h["admin"])
    assert r.status_code == 200 and r.json()["outcome"] == "rejected"
    assert client.post(f"{base}/reject", json={}, headers=h["admin"]).status_code == 404
    assert client.post(f"{base}/remove-and-store", json={}, headers=h["admin"]).status_code == 404
    assert not any(qstore.path(p).exists() for p in files if p)
    assert client.get("/dicomweb/studies", headers=h["admin"]).status_code == 204  # none
    assert client.get("/api/quarantine", headers=h["admin"]).json() == []
    rejected = client.get("/api/quarantine?status=rejected", headers=h["admin"]).json()
    assert [i["id"] for i in rejected] == [item_id]
    assert all(NAME not in str(i["reasons"]) for i in rejected)


def test_surname_equal_to_the_facility_code_is_stored(node: Node) -> None:
    client, h = admin_test_client(node)
    ds = ct_instance(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient={"PatientName": "HOSPA^MIRIAM", "PatientID": "MRN7700111"},
    )
    result = _upload(client, h, ds)
    assert result["outcome"] == "stored", result
    with node.db.session() as s:
        assert s.scalars(select(QuarantineItem)).first() is None


def test_deid_profile_and_mapping_are_admin_only(node: Node) -> None:
    client, h = admin_test_client(node)
    assert client.get("/api/deid/profile", headers=h["dm"]).status_code == 403
    prof = client.get("/api/deid/profile", headers=h["admin"]).json()
    assert prof["custom"] is False and "options" in prof["yaml"] and prof["warnings"] == []
    bad = client.put(
        "/api/deid/profile",
        content="options: [not, a, mapping",
        headers={**h["admin"], "Content-Type": "text/plain"},
    )
    assert bad.status_code == 422
    _set_profile(client, h, "options: {retain_device_identity: true}")
    prof = client.get("/api/deid/profile", headers=h["admin"]).json()
    assert any("Retain Device Identity" in w for w in prof["warnings"])
    _upload(client, h, ct_instance(study_uid=generate_uid(), series_uid=generate_uid()))
    csv_text = client.get("/api/deid/mapping.csv", headers=h["admin"]).text
    assert "MRN0042424" in csv_text and "HOSPA-" in csv_text
    assert client.get("/api/deid/mapping.csv", headers=h["dm"]).status_code == 403
