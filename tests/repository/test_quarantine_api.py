"""Residual PHI quarantines an instance; admins review (release/delete), each audited."""

from __future__ import annotations

from pydicom.uid import generate_uid

from pair.core.node import Node
from tests.conftest import admin_test_client
from tests.factories import ct_instance, to_bytes


def test_quarantine_review_and_deid_admin_api(node: Node) -> None:
    client, h = admin_test_client(node)
    study = generate_uid()
    leaky = [ct_instance(study_uid=study, series_uid=generate_uid(), index=i) for i in (1, 2)]
    for ds in leaky:
        ds.BodyPartExamined = "JOHNATHAN"  # the patient's given name in a retained element
    clean = ct_instance(study_uid=study, series_uid=generate_uid(), index=3)
    files = [
        ("files", (f"f{i}.dcm", to_bytes(ds), "application/dicom"))
        for i, ds in enumerate([*leaky, clean])
    ]
    r = client.post("/api/upload", files=files, headers=h["dm"])
    assert r.status_code == 200, r.text
    summary = r.json()
    assert (summary["stored"], summary["quarantined"]) == (1, 2)
    reasons = [i["reason"] for i in summary["items"] if i["outcome"] == "quarantined"]
    assert all("Residual PHI" in x for x in reasons)

    assert client.get("/api/quarantine", headers=h["dm"]).status_code == 403
    assert client.get("/api/quarantine", headers=h["adminb"]).json() == []
    items = client.get("/api/quarantine", headers=h["admin"]).json()
    assert len(items) == 2
    assert all("JOHNATHAN" not in str(i["reasons"]) for i in items)  # reasons name tags, not PHI
    assert any("0018,0015" in str(i["reasons"]) or "BodyPart" in str(i["reasons"]) for i in items)
    first, second = items
    assert (
        client.post(
            f"/api/quarantine/{first['id']}/release", json={"note": "reviewed"}, headers=h["adminb"]
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/quarantine/{first['id']}/release", json={"note": "reviewed"}, headers=h["admin"]
        ).status_code
        == 204
    )
    assert client.delete(f"/api/quarantine/{second['id']}", headers=h["admin"]).status_code == 204
    assert client.delete(f"/api/quarantine/{second['id']}", headers=h["admin"]).status_code == 404
    assert client.get("/api/quarantine", headers=h["admin"]).json() == []
    studies = client.get("/dicomweb/studies", headers=h["admin"]).json()
    assert studies[0]["00201208"]["Value"] == [2]  # released + clean
    actions = {a["action"] for a in client.get("/api/audit", headers=h["admin"]).json()}
    assert {"quarantine.release", "quarantine.delete", "instance.store"} <= actions

    # de-identification profile and mapping export: admins only
    assert client.get("/api/deid/profile", headers=h["dm"]).status_code == 403
    prof = client.get("/api/deid/profile", headers=h["admin"]).json()
    assert prof["custom"] is False and "options" in prof["yaml"]
    bad = client.put(
        "/api/deid/profile",
        content="options: [not, a, mapping",
        headers={**h["admin"], "Content-Type": "text/plain"},
    )
    assert bad.status_code == 422
    csv_text = client.get("/api/deid/mapping.csv", headers=h["admin"]).text
    assert "MRN0042424" in csv_text and "HOSPA-" in csv_text
    assert client.get("/api/deid/mapping.csv", headers=h["dm"]).status_code == 403
