"""Administration from the API, as from the CLI: facilities, users, tokens, AE titles; each
change audited with the admin who made it and the client address; 401 and 403 as named."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from pair.accounts import service
from pair.admin import service as admin
from pair.audit.models import AuditEvent
from pair.core.node import Node
from pair.web.app import create_app


def test_administration_from_the_api(node: Node) -> None:
    with node.db.session() as s:
        home = service.create_facility(s, "Node Hospital")
        # facilities are node-wide: only the node operator (granted from the CLI) creates them
        root = service.create_user(s, home, "root", "node-operator", allow_operator=True)
        h = {"Authorization": f"Bearer {service.create_token(s, root)[1]}"}
    client = TestClient(create_app(node))

    assert client.post("/api/facilities", json={"name": "Clinic B"}).status_code == 401
    r = client.post("/api/facilities", headers=h, json={"name": "Clinic B", "code": "CLB"})
    assert r.status_code == 201 and r.json()["code"] == "CLB"
    assert client.post("/api/facilities", headers=h, json={"name": "Clinic B"}).status_code == 409
    assert "Clinic B" in {f["name"] for f in client.get("/api/facilities", headers=h).json()}

    user = {"name": "eva", "role": "evaluator", "facility": "CLB", "password": "Harbour-Fennel-41"}
    r = client.post("/api/users", headers=h, json=user)
    assert r.status_code == 201 and r.json()["facility_id"] != home.id
    # the operator mints no credentials for other users (the CLI can)
    assert client.post("/api/tokens", headers=h, json={"user": "eva"}).status_code == 403
    with node.db.session() as s:
        eva = {"Authorization": f"Bearer {service.create_token(s, service.get_user(s, 'eva'))[1]}"}
    assert client.get("/api/me", headers=eva).json()["role"] == "evaluator"
    # a wrong role is 403 on every administration route
    for method, path in (
        ("get", "/api/facilities"),
        ("post", "/api/facilities"),
        ("get", "/api/users"),
        ("post", "/api/users"),
        ("get", "/api/ae-titles"),
        ("post", "/api/ae-titles"),
        ("delete", "/api/ae-titles/CT9"),
        ("get", "/api/audit"),
    ):
        kwargs = {"json": {}} if method == "post" else {}
        r = client.request(method.upper(), path, headers=eva, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 403, (method, path, r.status_code)
    r = client.post("/api/tokens", headers=eva, json={"user": "root"})
    assert r.status_code == 404  # the operator's account belongs to no facility: hidden

    r = client.post("/api/ae-titles", headers=h, json={"ae_title": "CT9", "facility": "CLB"})
    assert r.status_code == 201
    assert [a["ae_title"] for a in client.get("/api/ae-titles", headers=h).json()] == ["CT9"]
    assert client.delete("/api/ae-titles/CT9", headers=h).status_code == 204
    assert client.get("/api/ae-titles", headers=h).json() == []

    # a deactivated user's token stops working
    with node.db.session() as s:
        actor = service.actor_for(service.get_user(s, "root"), "test")
        admin.set_user_active(s, service.get_user(s, "eva").id, False, actor)
    assert client.get("/api/me", headers=eva).status_code == 401

    with node.db.session() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.user_name == "root")))
    by_action = {e.action: e for e in events}
    for action in ("facility.create", "user.create", "ae.add", "ae.remove"):
        assert action in by_action, (action, sorted(by_action))
        assert by_action[action].source == "testclient"
    assert all("Harbour-Fennel-41" not in str(e.detail) for e in events)
