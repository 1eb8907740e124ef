"""Portal pages without a browser: sign-in, CSRF, cookie flags, role and facility checks."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.repository import ingest
from pair.repository.models import Instance, QuarantineItem
from pair.web.app import create_app
from tests.factories import leaky_instance, quarantined_instance
from tests.portal_data import PASSWORD, World, build_world

HTML = {"accept": "text/html"}


def token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "page has no CSRF field"
    return found.group(1)


def sign_in(c: TestClient, user: str, password: str = PASSWORD) -> str:
    t = token(c.get("/login").text)
    r = c.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": t, "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return token(c.get("/", headers=HTML).text)


def test_login_logout_csrf_and_cookie_flags(node: Node) -> None:
    with node.db.session() as s:
        build_world(s)
    c = TestClient(create_app(node))
    r = c.get("/cases", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/cases"
    assert c.get("/api/cases").status_code == 401  # APIs answer JSON, never redirect
    login = c.get("/login")
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    # a form without the session's token is refused with a clear page
    r = c.post("/login", data={"username": "admin-a", "password": PASSWORD}, headers=HTML)
    assert r.status_code == 403 and "security token" in r.text
    t = token(login.text)
    r = c.post(
        "/login",
        data={"username": "admin-a", "password": "wrong-password", "csrf_token": t},
        headers=HTML,
    )
    assert r.status_code == 401 and "Unknown user or wrong password" in r.text
    t2 = sign_in(c, "admin-a")
    assert t2 != t  # fresh session after sign-in
    page = c.get("/", headers=HTML).text
    assert "admin-a" in page and 'href="/admin"' in page and 'href="/cases"' in page
    # cookie-authenticated API writes need the CSRF header
    assert c.put("/api/cases/1/clinical", json={}).status_code == 403
    assert c.put("/api/cases/1/clinical", json={}, headers={"x-csrf-token": t2}).status_code == 200
    assert c.post("/logout", data={"csrf_token": t2}, follow_redirects=False).status_code == 303
    assert c.get("/admin/users", headers=HTML, follow_redirects=False).status_code == 303


def test_secure_cookie_when_configured(tmp_path: object) -> None:
    settings = get_settings(f"{tmp_path}/n", session_cookie_secure=True)
    node = open_node(settings=settings)
    try:
        r = TestClient(create_app(node)).get("/login")
        assert "secure" in r.headers["set-cookie"].lower()
    finally:
        node.close()


def test_roles_and_facility_scope(node: Node) -> None:
    with node.db.session() as s:
        world: World = build_world(s)
    case_a, case_b = world.cases["HOSPA-00001"], world.cases["HOSPB-00001"]
    rad = TestClient(create_app(node))
    sign_in(rad, "radiologist-a")
    home = rad.get("/", headers=HTML).text
    assert 'href="/admin"' not in home
    for path in ("/admin/users", "/admin/audit", "/admin/quarantine"):
        r = rad.get(path, headers=HTML)
        assert r.status_code == 403 and "cannot open this page" in r.text
    page = rad.get(f"/cases/{case_a}", headers=HTML)
    assert page.status_code == 200 and "Only data managers can change" in page.text
    t = token(page.text)
    r = rad.post(f"/cases/{case_a}/clinical", data={"csrf_token": t, "sex": "Male"}, headers=HTML)
    assert r.status_code == 403
    r = rad.get(f"/cases/{case_b}", headers=HTML)
    assert r.status_code == 404 and "No case" in r.text
    assert "HOSPB" not in rad.get("/cases", headers=HTML).text
    assert rad.get("/nowhere", headers=HTML).status_code == 404
    other = TestClient(create_app(node))
    sign_in(other, "datamanager-b")
    home_b = other.get("/", headers=HTML).text
    assert '<span class="stat-value">1</span><span class="stat-label">cases' in home_b


def test_admin_pages_work(node: Node) -> None:
    with node.db.session() as s:
        world = build_world(s)
    c = TestClient(create_app(node))
    t = sign_in(c, "admin-a")
    r = c.post(
        "/admin/users",
        data={
            "csrf_token": t,
            "name": "eve",
            "role": "evaluator",
            "facility_id": str(world.facilities["A"]),
            "password": "long-enough-pw",
        },
        headers=HTML,
    )
    assert r.status_code == 200 and "User eve created" in r.text
    r = c.post(
        "/admin/users",
        data={
            "csrf_token": t,
            "name": "eve",
            "role": "evaluator",
            "facility_id": str(world.facilities["A"]),
        },
        headers=HTML,
    )
    assert r.status_code == 409 and "already exists" in r.text
    r = c.post(
        "/admin/tokens", data={"csrf_token": t, "user_id": "1", "label": "router"}, headers=HTML
    )
    assert r.status_code == 201 and re.search(r"pair_[A-Za-z0-9_-]{20,}", r.text)
    assert r.headers["cache-control"] == "no-store"
    assert "pair_" not in c.get("/admin/tokens", headers=HTML).text  # shown once only
    r = c.post("/admin/tokens/1/revoke", data={"csrf_token": t}, headers=HTML)
    assert "Token 1 revoked" in r.text
    r = c.post(
        "/admin/ae-titles",
        data={"csrf_token": t, "ae_title": "CT_ROOM_1", "facility_id": str(world.facilities["A"])},
        headers=HTML,
    )
    assert "AE title CT_ROOM_1 added" in r.text
    r = c.post(
        "/admin/ae-titles",
        data={"csrf_token": t, "ae_title": "bad\\ae", "facility_id": "1"},
        headers=HTML,
    )
    assert r.status_code == 422 and "Invalid AE title" in r.text
    r = c.post(
        "/admin/ae-titles/remove", data={"csrf_token": t, "ae_title": "CT_ROOM_1"}, headers=HTML
    )
    assert "removed" in r.text
    r = c.post("/admin/deid/1", data={"csrf_token": t, "profile": "- not a mapping"}, headers=HTML)
    assert r.status_code == 422
    r = c.post("/admin/deid/1", data={"csrf_token": t, "profile": "options: {}"}, headers=HTML)
    assert r.status_code == 200 and "Profile saved" in r.text
    r = c.get("/admin/audit", params={"action": "ae."}, headers=HTML)
    rows = r.text.split("<tbody>")[1]
    assert "ae.add" in rows and "ae.remove" in rows and "user.create" not in rows
    assert "Nothing pending" in c.get("/admin/quarantine", headers=HTML).text


def test_quarantine_review_and_decisions_from_the_portal(node: Node) -> None:
    """No release form; the review shows keyword and masked value, a preview; the three
    decisions work; another facility's admin gets 404 everywhere."""
    from pair.accounts import service as accounts
    from pair.accounts.models import Facility

    with node.db.session() as s:
        world = build_world(s)
        fb = s.get(Facility, world.facilities["B"])
        assert fb is not None
        accounts.create_user(s, fb, "admin-b", "admin", PASSWORD)
    first = quarantined_instance(node, world.facilities["A"], leaky_instance())
    second = quarantined_instance(node, world.facilities["A"], leaky_instance())
    c = TestClient(create_app(node))
    t = sign_in(c, "admin-a")
    page = c.get(f"/admin/quarantine/{first}", headers=HTML)
    assert page.status_code == 200
    assert "BodyPartExamined" in page.text and "J********" in page.text
    assert "JOHNATHAN" not in page.text and "/release" not in page.text
    assert f'src="/admin/quarantine/{first}/preview.png"' in page.text
    png = c.get(f"/admin/quarantine/{first}/preview.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert c.post(f"/admin/quarantine/{first}/release", data={"csrf_token": t}).status_code in (
        404,
        405,
    )
    r = c.post(f"/admin/quarantine/{first}/rerun-and-store", data={"csrf_token": t}, headers=HTML)
    assert r.status_code == 200 and "still held" in r.text  # the strict profile keeps it too
    r = c.post(
        f"/admin/quarantine/{first}/remove-and-store",
        data={"csrf_token": t, "note": "name in body part"},
        headers=HTML,
    )
    assert r.status_code == 200 and "stored without the flagged elements" in r.text
    r = c.post(f"/admin/quarantine/{second}/reject", data={"csrf_token": t}, headers=HTML)
    assert r.status_code == 200 and f"Quarantine item {second} rejected" in r.text
    with node.db.session() as s:
        statuses = {i.id: i.status for i in s.scalars(select(QuarantineItem))}
        assert statuses == {first: "stored", second: "rejected"}
        row = s.get(QuarantineItem, first)
        assert row is not None
        inst = s.scalars(
            select(Instance).where(Instance.sop_instance_uid == row.sop_instance_uid)
        ).one()
        data = ingest.content_store(node).read(inst.storage_path)
        assert b"JOHNATHAN" not in data
    other = TestClient(create_app(node))
    tb = sign_in(other, "admin-b")
    third = quarantined_instance(node, world.facilities["A"], leaky_instance())
    assert other.get(f"/admin/quarantine/{third}", headers=HTML).status_code == 404
    assert other.get(f"/admin/quarantine/{third}/preview.png").status_code == 404
    for action in ("remove-and-store", "rerun-and-store", "reject"):
        r = other.post(f"/admin/quarantine/{third}/{action}", data={"csrf_token": tb})
        assert r.status_code == 404, action


def test_deid_page_warns_when_device_identity_is_kept(node: Node) -> None:
    with node.db.session() as s:
        world = build_world(s)
    c = TestClient(create_app(node))
    t = sign_in(c, "admin-a")
    fid = world.facilities["A"]
    page = c.get(f"/admin/deid?facility={fid}", headers=HTML)
    assert "Retain Device Identity is on" not in page.text
    assert "retain_device_identity: false" in page.text  # the node default, shown
    r = c.post(
        f"/admin/deid/{fid}",
        data={"csrf_token": t, "profile": "options: {retain_device_identity: true}"},
        headers=HTML,
    )
    assert r.status_code == 200 and "Retain Device Identity is on" in r.text
