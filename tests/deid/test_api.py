"""Instances flagged at ingest for burned-in text are listed for admin review; the mapping
export stays within the admin's facility."""

from __future__ import annotations

from pydicom.uid import generate_uid

from pair.core.node import Node
from tests.conftest import admin_test_client
from tests.factories import ct_instance, to_bytes


def test_burned_in_review_lists_flagged_instances(node: Node) -> None:
    client, h = admin_test_client(node)
    study = generate_uid()
    annotated = ct_instance(study_uid=study, series_uid=generate_uid(), index=1)
    annotated.BurnedInAnnotation = "YES"
    us = ct_instance(study_uid=study, series_uid=generate_uid(), index=2, modality="US")
    clean = ct_instance(study_uid=study, series_uid=generate_uid(), index=3)
    files = [
        ("files", (f"f{i}.dcm", to_bytes(ds), "application/dicom"))
        for i, ds in enumerate([annotated, us, clean])
    ]
    r = client.post("/api/upload", files=files, headers=h["dm"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["outcome"] for i in items] == ["stored"] * 3
    assert items[0]["burned_in_risk"] == ["BurnedInAnnotation is YES"]
    assert items[2]["burned_in_risk"] == []

    assert client.get("/api/deid/burned-in-review", headers=h["dm"]).status_code == 403
    assert client.get("/api/deid/burned-in-review", headers=h["adminb"]).json() == []
    review = client.get("/api/deid/burned-in-review", headers=h["admin"]).json()
    assert [(x["sop_instance_uid"], x["modality"], x["reasons"]) for x in review] == [
        (items[0]["sop_instance_uid"], "CT", ["BurnedInAnnotation is YES"]),
        (items[1]["sop_instance_uid"], "US", ["modality US often carries burned-in text"]),
    ]
    assert all(x["study_uid"] == items[0]["study_uid"] for x in review)
    page = client.get("/api/deid/burned-in-review?limit=1&offset=1", headers=h["admin"]).json()
    assert [x["modality"] for x in page] == ["US"]
    assert client.get("/api/deid/burned-in-review?limit=0", headers=h["admin"]).status_code == 422

    # the stored header does not claim the identity is gone from pixels known to show it
    x = review[0]
    url = f"/dicomweb/studies/{x['study_uid']}/series/{x['series_uid']}/instances/"
    meta = client.get(url + f"{x['sop_instance_uid']}/metadata", headers=h["admin"]).json()[0]
    assert meta["00120062"]["Value"] == ["NO"]
    y = review[1]
    meta = client.get(
        f"/dicomweb/studies/{y['study_uid']}/series/{y['series_uid']}/instances/"
        f"{y['sop_instance_uid']}/metadata",
        headers=h["admin"],
    ).json()[0]
    assert meta["00120062"]["Value"] == ["YES"]  # a heuristic flag: unknown, not NO

    actions = [a["action"] for a in client.get("/api/audit", headers=h["admin"]).json()]
    assert "deid.burned_in.list" in actions

    # the mapping export is per facility: another facility's admin never sees this one's
    mapping = client.get("/api/deid/mapping.csv", headers=h["admin"])
    assert "MRN0042424" in mapping.text and "HOSPA-000001" in mapping.text
    assert mapping.headers["cache-control"] == "no-store"
    other = client.get("/api/deid/mapping.csv", headers=h["adminb"]).text
    assert "MRN0042424" not in other and "HOSPA-" not in other
    assert client.get("/api/deid/mapping.csv", headers=h["dm"]).status_code == 403
