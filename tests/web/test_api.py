"""HTTP basics on both databases: health, OpenAPI, 401/403, administration API, audit."""

from __future__ import annotations

from fastapi.testclient import TestClient

from pair.accounts import service
from pair.core.node import Node
from pair.web.app import create_app


def _setup(node: Node) -> dict[str, str]:
    with node.db.session() as s:
        fa = service.create_facility(s, "Hospital A")
        admin = service.create_user(s, fa, "admin", "admin", "Admin-Pass-Orchid-7")
        rad = service.create_user(s, fa, "rad", "radiologist", "Rad-Pass-Lantern-3")
        return {"admin": service.create_token(s, admin)[1], "rad": service.create_token(s, rad)[1]}


def test_health_auth_roles_and_admin_api(node: Node) -> None:
    tokens = _setup(node)
    client = TestClient(create_app(node))
    assert client.get("/healthz").json()["status"] == "ok"
    assert "/dicomweb/studies" in client.get("/openapi.json").json()["paths"]

    r = client.get("/api/users")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/users", headers={"Authorization": "Bearer bad"}).status_code == 401
    assert client.get("/api/users", headers={"Authorization": "Basic abc"}).status_code == 401
    rad = {"Authorization": f"Bearer {tokens['rad']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    r = client.get("/api/users", headers=rad)
    assert r.status_code == 403 and "radiologist" in r.json()["message"]
    assert client.get("/api/me", headers=rad).json()["role"] == "radiologist"

    r = client.post(
        "/api/users",
        headers=admin,
        json={
            "name": "dm",
            "role": "data-manager",
            "facility": "Hospital A",
            "password": "Ward7-Lumen-Quartz",
        },
    )
    assert r.status_code == 201
    r = client.post(
        "/api/users",
        headers=admin,
        json={"name": "x", "role": "superuser", "facility": "Hospital A"},
    )
    assert r.status_code == 422 and "allowed roles" in r.json()["message"]
    r = client.post("/api/users", headers=admin, json={"name": "x"})
    assert r.status_code == 422
    r = client.post(
        "/api/ae-titles", headers=admin, json={"ae_title": "MODALITY1", "facility": "Hospital A"}
    )
    assert r.status_code == 201
    assert (
        client.post(
            "/api/ae-titles",
            headers=admin,
            json={"ae_title": "MODALITY1", "facility": "Hospital A"},
        ).status_code
        == 409
    )
    r = client.post("/api/tokens", headers=admin, json={"user": "dm", "label": "pacs"})
    assert r.status_code == 201
    token_id, plain = r.json()["id"], r.json()["token"]
    dm = {"Authorization": f"Bearer {plain}"}
    assert client.get("/api/me", headers=dm).json()["name"] == "dm"
    assert client.delete(f"/api/tokens/{token_id}", headers=admin).status_code == 204
    assert client.get("/api/me", headers=dm).status_code == 401

    audit = client.get("/api/audit", headers=admin).json()
    actions = {a["action"] for a in audit}
    assert {"user.create", "ae.add", "token.create", "token.revoke"} <= actions
    assert all("Ward7-Lumen-Quartz" not in str(a) for a in audit)
    assert (
        client.get("/api/audit?action=token", headers=admin).json()[0]["action"].startswith("token")
    )
    assert client.get("/api/audit", headers=rad).status_code == 403
