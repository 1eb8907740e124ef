"""Portal pages without a browser: sign-in, CSRF, cookie flags, role and facility checks."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select

from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.repository import ingest
from pair.repository.models import Instance, QuarantineItem
from pair.web.app import create_app
from tests.factories import ct_instance, to_bytes
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
            "facility_id": str(world.facilities["B"]),
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
            "facility_id": str(world.facilities["B"]),
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


def test_quarantine_release_from_the_portal(node: Node) -> None:
    with node.db.session() as s:
        world = build_world(s)
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    _, rel = ingest.quarantine_store(node).write(to_bytes(ds))
    with node.db.session() as s:
        item = QuarantineItem(
            facility_id=world.facilities["A"],
            storage_path=rel,
            sop_instance_uid=str(ds.SOPInstanceUID),
            modality="CT",
            reasons=[{"path": "(0008,1030)", "message": "name fragment"}],
        )
        s.add(item)
        s.flush()
        item_id = item.id
    c = TestClient(create_app(node))
    t = sign_in(c, "admin-a")
    page = c.get(f"/admin/quarantine/{item_id}", headers=HTML)
    assert page.status_code == 200 and "name fragment" in page.text
    r = c.post(
        f"/admin/quarantine/{item_id}/release", data={"csrf_token": t, "note": "ok"}, headers=HTML
    )
    assert r.status_code == 200 and f"Quarantine item {item_id} released" in r.text
    with node.db.session() as s:
        done = s.get(QuarantineItem, item_id)
        assert done is not None and done.status == "released" and done.review_note == "ok"
        assert (
            s.scalar(select(Instance).where(Instance.sop_instance_uid == str(ds.SOPInstanceUID)))
            is not None
        )
    r = c.post(f"/admin/quarantine/{item_id}/delete", data={"csrf_token": t}, headers=HTML)
    assert r.status_code == 404  # no longer pending
