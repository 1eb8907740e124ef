"""Issue 11's audit, item by item, on SQLite and PostgreSQL: facility B's admin cannot take
facility A over (tokens, users, AE titles, de-identification profile, revocations,
deactivations, lists), the node operator administers every facility but reads no patient data,
and what the operator does shows in the affected facility's audit log."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from pair.accounts.models import ApiToken, Facility, User
from pair.core.node import Node
from pair.web.app import create_app
from tests.security.world import (
    PASSWORD,
    World,
    ae_exists,
    bearer,
    build,
    portal_client,
    user_active,
)


@pytest.fixture
def world(node: Node) -> World:
    return build(node)


def _no_a(world: World, text: str, where: str, asked: str = "") -> None:
    """No identifier of A in ``text``, except those the request itself named (``asked``)."""
    leaked = [s for s in world.a_identifiers() if s and s in text and s not in asked]
    assert not leaked, f"{where} shows facility A's {leaked}"


def _a_token_ids(world: World) -> list[int]:
    with world.node.db.session() as s:
        return list(
            s.scalars(
                select(ApiToken.id)
                .join(User, ApiToken.user_id == User.id)
                .where(User.facility_id == world.ids["A"].facility)
            )
        )


def test_facility_b_admin_cannot_take_over_facility_a(world: World) -> None:
    a = world.ids["A"]
    app = create_app(world.node)
    api, b = TestClient(app), bearer(world, "beta-admin")

    # a token for A's admin (then A's studies and mapping) is refused, as for a missing user
    for target in ("alpha-admin", "alpha-service"):
        r = api.post("/api/tokens", headers=b, json={"user": target})
        assert r.status_code == 404 and r.json()["message"] == f"No user named {target!r}."
    assert api.post("/api/tokens", headers=b, json={"user": "node-op"}).status_code == 404
    # B's own reads hold nothing of A
    studies = api.get("/dicomweb/studies", headers=b)
    assert studies.status_code == 200
    _no_a(world, studies.text, "QIDO-RS")
    assert api.get(f"/dicomweb/studies/{a.study}/metadata", headers=b).status_code == 404
    mapping = api.get("/api/deid/mapping.csv", headers=b)
    assert mapping.status_code == 200 and "MRNBETA1313" in mapping.text
    _no_a(world, mapping.text, "B's mapping.csv")

    # an admin (or anyone) in A, by code, name or id: "no facility", as for a missing one
    for facility in ("HOSPA", "Hospital Alpha", str(a.facility)):
        body = {"name": "intruder", "role": "admin", "facility": facility, "password": PASSWORD}
        r = api.post("/api/users", headers=b, json=body)
        assert r.status_code == 404 and "No facility named" in r.json()["message"]
    assert api.post("/api/users", headers=b, json={**body, "facility": "HOSPZ"}).status_code == 404
    # an AE title in A (whose C-FIND/C-STORE would reach A's data)
    r = api.post("/api/ae-titles", headers=b, json={"ae_title": "INTRUDER", "facility": "HOSPA"})
    assert r.status_code == 404 and not ae_exists(world.node, "INTRUDER")
    # revoking A's tokens, deleting A's AE titles
    for token_id in _a_token_ids(world):
        assert api.delete(f"/api/tokens/{token_id}", headers=b).status_code == 404
    assert api.delete(f"/api/ae-titles/{a.ae_title}", headers=b).status_code == 404
    assert ae_exists(world.node, a.ae_title)
    # the node-operator role is never granted through the API, not even in B
    body = {"name": "b-op", "role": "node-operator", "facility": "HOSPB", "password": PASSWORD}
    r = api.post("/api/users", headers=b, json=body)
    assert r.status_code == 403 and "command line" in r.json()["message"]

    # the same through the portal's forms
    web = TestClient(app)
    t = portal_client(web, "beta-admin")
    r = web.post(
        f"/admin/deid/{a.facility}",
        data={"csrf_token": t, "profile": "options: {}"},
        follow_redirects=False,
    )
    assert r.status_code == 404
    forms = {
        "/admin/users": {"name": "intruder2", "role": "admin", "facility_id": str(a.facility)},
        "/admin/ae-titles": {"ae_title": "INTRUDER2", "facility_id": str(a.facility)},
        "/admin/tokens": {"user_id": str(world.users["alpha-admin"])},
        "/admin/ae-titles/remove": {"ae_title": a.ae_title},
        f"/admin/users/{world.users['alpha-admin']}/active": {"active": "0"},
        f"/admin/tokens/{_a_token_ids(world)[0]}/revoke": {},
    }
    for path, data in forms.items():
        r = web.post(path, data={"csrf_token": t, **data}, follow_redirects=False)
        assert r.status_code == 404, (path, r.status_code)
        _no_a(world, r.text, path, asked=str(data))

    # nothing of A changed
    with world.node.db.session() as s:
        row = s.get(Facility, a.facility)
        assert row is not None and "alpha-profile-marker" in (row.deid_profile or "")
        assert s.scalar(select(User).where(User.name.startswith("intruder"))) is None
    assert user_active(world.node, "alpha-admin") and ae_exists(world.node, a.ae_title)
    assert not ae_exists(world.node, "INTRUDER2")
    assert api.get("/api/me", headers=bearer(world, "alpha-admin")).status_code == 200

    # B's lists show B only
    for path in ("/api/users", "/api/tokens", "/api/ae-titles", "/api/audit", "/api/facilities"):
        r = api.get(path, headers=b)
        assert r.status_code == 200 and r.json(), path
        _no_a(world, r.text, path)
    for path in ("/admin/users", "/admin/tokens", "/admin/ae-titles", "/admin/audit"):
        r = web.get(path)
        assert r.status_code == 200, path
        _no_a(world, r.text, path)
    r = web.get(f"/admin/deid?facility={a.facility}")
    assert r.status_code == 200 and "beta-profile-marker" in r.text
    _no_a(world, r.text, "/admin/deid")


def test_operator_administers_every_facility_audited_there(world: World) -> None:
    a = world.ids["A"]
    app = create_app(world.node)
    api, op = TestClient(app), bearer(world, "node-op")

    body = {"name": "alpha-new-admin", "role": "admin", "facility": "HOSPA", "password": PASSWORD}
    assert api.post("/api/users", headers=op, json=body).status_code == 201
    r = api.post("/api/ae-titles", headers=op, json={"ae_title": "ALPHA_MR", "facility": "HOSPA"})
    assert r.status_code == 201
    web = TestClient(app)
    t = portal_client(web, "node-op")
    r = web.post(
        f"/admin/users/{world.users['alpha-evaluator']}/active",
        data={"csrf_token": t, "active": "0"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and not user_active(world.node, "alpha-evaluator")
    r = web.post(
        f"/admin/deid/{a.facility}",
        data={"csrf_token": t, "profile": "# alpha-profile-marker\noptions: {}"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    # ... all of it in A's audit log, seen by A's admin, and none of it in B's
    seen = api.get("/api/audit", headers=bearer(world, "alpha-admin"), params={"user": "node-op"})
    actions = {e["action"] for e in seen.json()}
    assert {"user.create", "ae.add", "user.deactivate", "deid.profile.update"} <= actions
    assert {e["facility_id"] for e in seen.json()} == {a.facility}
    theirs = api.get("/api/audit", headers=bearer(world, "beta-admin"), params={"user": "node-op"})
    assert theirs.status_code == 200 and theirs.json() == []

    # the operator reads no patient data and mints no credentials for others
    for path in ("/api/deid/mapping.csv", "/dicomweb/studies", "/api/cases", "/cases"):
        assert api.get(path, headers=op).status_code == 403, path
    r = api.post("/api/tokens", headers=op, json={"user": "alpha-admin"})
    assert r.status_code == 403
    assert api.post("/api/tokens", headers=op, json={"user": "node-op"}).status_code == 201
    assert web.get(f"/admin/quarantine/{a.quarantine}").status_code == 403
    # nor grants its own role
    body = {"name": "op2", "role": "node-operator", "facility": "HOSPA", "password": PASSWORD}
    assert api.post("/api/users", headers=op, json=body).status_code == 403
    data = {"csrf_token": t, "name": "op3", "role": "node-operator", "facility_id": a.facility}
    assert web.post("/admin/users", data=data).status_code == 403
    # a facility admin cannot touch the operator's account
    alpha = bearer(world, "alpha-admin")
    assert api.post("/api/tokens", headers=alpha, json={"user": "node-op"}).status_code == 404
    assert "node-op" not in api.get("/api/users", headers=alpha).text


def test_node_operator_is_created_from_the_command_line(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pair.cli.main import app

    monkeypatch.setenv("PAIR_DATABASE_URL", database_url)
    d = str(tmp_path / "node")
    runner = CliRunner()
    assert (
        runner.invoke(app, ["facility", "create", "Hospital Alpha", "--data-dir", d]).exit_code == 0
    )
    args = ["user", "create", "--data-dir", d, "--facility", "Hospital Alpha", "--name", "op"]
    r = runner.invoke(app, [*args, "--role", "node-operator"])
    assert r.exit_code == 0, r.output
    assert "node-operator" in r.output
