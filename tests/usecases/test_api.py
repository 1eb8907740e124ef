"""Use-case API and workflow on SQLite and PostgreSQL: draft → review → publish → retire,
permissions, audit, exports, diff, and algorithm submission checked against a use case."""

from __future__ import annotations

import copy
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.audit.models import AuditEvent
from pair.core.node import Node
from pair.usecases.spec import SHIPPED_DIR, load_file
from pair.web.app import create_app
from tests.algorithms.algo_builders import manifest, mean_model, write_package, zip_folder


def _setup(node: Node) -> tuple[TestClient, dict[str, dict[str, str]]]:
    heads = {}
    with node.db.session() as s:
        f = accounts.create_facility(s, "General Hospital")
        for name, role in (
            ("author", "radiologist"),
            ("other", "researcher"),
            ("chair", "panel"),
            ("evaluator", "evaluator"),
            ("admin", "admin"),
        ):
            u = accounts.create_user(s, f, f"u-{name}", role)
            heads[name] = {"Authorization": f"Bearer {accounts.create_token(s, u, 't')[1]}"}
    return TestClient(create_app(node)), heads


def _draft(uid: str = "pair-test-opacity") -> dict[str, Any]:
    doc = copy.deepcopy(load_file(SHIPPED_DIR / "covid19-cxr-pattern.yaml").document)
    doc["overview"]["id"] = uid
    doc["overview"]["title"] = "Test opacity use case"
    return doc


def test_shipped_use_cases_are_published_and_exported(node: Node) -> None:
    client, h = _setup(node)
    assert client.get("/api/usecases").status_code == 401
    r = client.get("/api/usecases", params={"status": "published"}, headers=h["other"])
    assert r.status_code == 200
    assert r.json()["total"] == 4
    r = client.get("/api/usecases", params={"q": "radiograph"}, headers=h["other"])
    assert [i["id"] for i in r.json()["items"]] == ["pair-covid19-cxr-pattern"]
    r = client.get("/api/usecases/pair-covid19-ct-quantification/export.md", headers=h["other"])
    assert r.status_code == 200
    assert "## PAIR evaluation plan" in r.text and "RDES268-E4" in r.text
    r = client.get("/api/usecases/pair-covid19-ct-pattern/export.json", headers=h["other"])
    assert r.json()["overview"]["id"] == "pair-covid19-ct-pattern"
    assert client.get("/api/usecases/nope", headers=h["other"]).status_code == 404
    create_app(node)  # a second start adds nothing
    r = client.get("/api/usecases", headers=h["other"])
    assert r.json()["total"] == 4


def test_workflow_permissions_audit_and_diff(node: Node) -> None:
    client, h = _setup(node)
    bad = _draft()
    bad["technical_specifications"]["primary_outputs"][0]["value_set"] = ["RDE1360.0", "RDE1360.7"]
    r = client.post("/api/usecases", json=bad, headers=h["author"])
    assert r.status_code == 422
    assert "primary_outputs/0/value_set/1: 'RDE1360.7' is not a value of RDE1360" in r.text

    r = client.post("/api/usecases", json=_draft(), headers=h["author"])
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["version"]) == ("draft", 1)
    assert client.post("/api/usecases", json=_draft(), headers=h["author"]).status_code == 409
    uc = "/api/usecases/pair-test-opacity"
    assert client.post(f"{uc}/submit", headers=h["other"]).status_code == 403
    assert client.post(f"{uc}/publish", headers=h["chair"]).status_code == 409  # still a draft
    assert client.post(f"{uc}/submit", headers=h["author"]).json()["status"] == "under_review"

    r = client.post(f"{uc}/comments", json={"text": "Add AP portable"}, headers=h["other"])
    assert r.status_code == 201
    assert client.post(f"{uc}/comments", json={"text": " "}, headers=h["other"]).status_code == 422

    revised = _draft()
    revised["dataset_considerations"]["population"] = "Adults, PA, AP and portable AP radiographs."
    assert client.put(uc, json=revised, headers=h["other"]).status_code == 403
    r = client.put(uc, json=revised, headers=h["author"])
    assert (r.json()["version"], r.json()["status"]) == (2, "under_review")
    r = client.get(f"{uc}/diff", params={"from": 1, "to": 2}, headers=h["other"])
    assert r.json()["changes"] == [
        {
            "path": "dataset_considerations/population",
            "before": _draft()["dataset_considerations"]["population"],
            "after": "Adults, PA, AP and portable AP radiographs.",
        }
    ]

    # only the panel publishes: administering the node is not a clinical review
    for who in ("author", "other", "evaluator", "admin"):
        assert client.post(f"{uc}/publish", headers=h[who]).status_code == 403
    assert client.post(f"{uc}/publish", headers=h["chair"]).json()["status"] == "published"
    assert (
        client.post(f"{uc}/comments", json={"text": "late"}, headers=h["other"]).status_code == 409
    )
    body = client.get(uc, headers=h["other"]).json()
    assert [v["status"] for v in body["versions"]] == ["superseded", "published"]
    assert body["comments"][0]["version"] == 1
    assert client.post(f"{uc}/retire", headers=h["other"]).status_code == 403
    assert client.post(f"{uc}/retire", headers=h["admin"]).status_code == 403
    assert client.post(f"{uc}/retire", headers=h["chair"]).json()["status"] == "retired"

    with node.db.session() as s:
        actions = s.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.object_type == "usecase", AuditEvent.user_name != "system")
            .order_by(AuditEvent.id)
        ).all()
    assert actions == [
        "usecase.create",
        "usecase.submit",
        "usecase.comment",
        "usecase.revise",
        "usecase.publish",
        "usecase.retire",
    ]


def _upload(
    client: TestClient, head: dict[str, str], m: dict[str, Any], tmp: Any
) -> httpx.Response:
    data = zip_folder(write_package(tmp, m, mean_model()))
    return client.post(
        "/api/algorithms", files={"package": ("p.zip", data, "application/zip")}, headers=head
    )


def test_algorithm_violating_its_use_case_is_refused(node: Node, tmp_path: Any) -> None:
    client, h = _setup(node)
    # a CR/DX consolidation model declaring the CT pattern use case
    wrong = manifest(use_case_id="pair-covid19-ct-pattern", **{"output.cde_element": "RDE1369"})
    r = _upload(client, h["evaluator"], wrong, tmp_path / "a")
    assert r.status_code == 422, r.text
    assert r.json()["details"] == [
        "modality: CR, DX not accepted by use case pair-covid19-ct-pattern (modalities: CT)",
        "output.cde_element: RDE1369 is not an output of use case pair-covid19-ct-pattern "
        "(outputs: PAIR-RDE7, RDE1359, RDE1360)",
    ]
    codes = manifest(use_case_id="pair-covid19-cxr-pattern", **{"output.cde_element": "RDE1360"})
    codes["output"]["classes"][0]["cde_code"] = "RDE1360.2"
    r = _upload(client, h["evaluator"], codes, tmp_path / "b")
    assert r.status_code == 422
    assert r.json()["details"] == [
        "output.classes[0] (absent): RDE1360.2 is not in use case pair-covid19-cxr-pattern's "
        "value set for RDE1360 (RDE1360.0, RDE1360.1)"
    ]
    assert client.get("/api/algorithms", headers=h["evaluator"]).json() == []

    fits = manifest(use_case_id="pair-covid19-cxr-pattern", **{"output.cde_element": "RDE1360"})
    r = _upload(client, h["evaluator"], fits, tmp_path / "c")
    assert r.status_code == 201, r.text
    assert (
        client.post("/api/usecases/pair-covid19-cxr-pattern/retire", headers=h["chair"]).json()[
            "status"
        ]
        == "retired"
    )
    newer = manifest(use_case_id="pair-covid19-cxr-pattern", version="1.1.0")
    newer["output"]["cde_element"] = "RDE1360"
    r = _upload(client, h["evaluator"], newer, tmp_path / "e")
    assert r.status_code == 422
    assert "use case pair-covid19-cxr-pattern is retired" in r.json()["message"]
    # a draft (anyone may write one) under an algorithm's id does not block that algorithm
    squat = _draft("site-local-study")
    squat["dataset_considerations"]["modalities"] = ["MR"]
    squat["technical_specifications"]["inputs"]["modalities"] = ["MR"]
    assert client.post("/api/usecases", json=squat, headers=h["other"]).status_code == 201
    local = manifest(id="local-model", use_case_id="site-local-study")  # not published: not checked
    assert _upload(client, h["evaluator"], local, tmp_path / "d").status_code == 201
