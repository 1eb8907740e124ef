"""Sign-in hardening on SQLite and PostgreSQL: server-side sessions (a copied cookie dies at
sign-out), throttling with 429 + Retry-After + audit, the password policy, an admin's session
list with forced sign-out (own facility only), password change, security headers and flash
messages that never come from the URL."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.accounts.models import LoginThrottle, WebSession
from pair.audit.models import AuditEvent
from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.web.app import create_app
from tests.portal_data import PASSWORD, build_world
from tests.web.test_pages import HTML, sign_in, token

NEW_PASSWORD = "Ward7-Lumen-Quartz"


def world_client(node: Node) -> TestClient:
    """Facilities A and B with build_world's users, plus "evaluator-a", "researcher-a" and an
    admin of B ("admin-b")."""
    with node.db.session() as s:
        build_world(s)
        a, b = accounts.get_facility(s, "HOSPA"), accounts.get_facility(s, "HOSPB")
        accounts.create_user(s, a, "evaluator-a", "evaluator", PASSWORD)
        accounts.create_user(s, a, "researcher-a", "researcher", PASSWORD)
        accounts.create_user(s, b, "admin-b", "admin", PASSWORD)
    return TestClient(create_app(node))


def bearer(node: Node, user: str) -> dict[str, str]:
    with node.db.session() as s:
        plain = accounts.create_token(s, accounts.get_user(s, user))[1]
    return {"Authorization": f"Bearer {plain}"}


def cookie_of(c: TestClient) -> str:
    value = c.cookies.get("pair_session")
    assert value, "no session cookie"
    return value


def test_copied_cookie_stops_working_after_sign_out(node: Node) -> None:
    c = world_client(node)
    sign_in(c, "radiologist-a")
    copied = cookie_of(c)
    other = TestClient(c.app)
    other.cookies.set("pair_session", copied)
    assert other.get("/api/me").json()["name"] == "radiologist-a"
    with node.db.session() as s:  # only a hash of the id is stored
        hashes = list(s.scalars(select(WebSession.token_hash)))
    assert hashes and copied not in hashes

    r = c.post("/logout", data={"csrf_token": token(c.get("/", headers=HTML).text)})
    assert r.status_code == 200 and "You have signed out." in r.text
    replay = TestClient(c.app)
    replay.cookies.set("pair_session", copied)
    assert replay.get("/api/me").status_code == 401
    r = replay.get("/cases", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    with node.db.session() as s:
        assert s.scalar(select(WebSession).where(WebSession.user_id.is_not(None))) is None


def test_sessions_expire_when_idle(node: Node) -> None:
    node.settings.session_idle_timeout_s = 60
    c = world_client(node)
    sign_in(c, "radiologist-a")
    assert c.get("/api/me").status_code == 200
    with node.db.session() as s:
        for row in s.scalars(select(WebSession)):
            row.last_seen_s -= 61
    assert c.get("/api/me").status_code == 401


def _attempt(c: TestClient, user: str, password: str) -> httpx.Response:
    t = token(c.get("/login").text)
    return c.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": t},
        headers=HTML,
        follow_redirects=False,
    )


def test_throttle_locks_the_account_with_429_retry_after_and_audit(node: Node) -> None:
    c = world_client(node)
    for _ in range(node.settings.login_max_failures):
        r = _attempt(c, "radiologist-a", "Not-The-Password-1")
        assert r.status_code == 401
    # locked: even the right password is refused without being checked
    r = _attempt(c, "radiologist-a", PASSWORD)
    assert r.status_code == 429, r.text
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= node.settings.login_lockout_base_s
    assert "Too many failed sign-ins" in r.text
    # the lock is in the database: another process (another engine) refuses as well
    other = open_node(settings=get_settings(node.settings.data_dir, database_url=node.db.url))
    try:
        r2 = _attempt(TestClient(create_app(other)), "radiologist-a", PASSWORD)
        assert r2.status_code == 429
    finally:
        other.close()
    with node.db.session() as s:
        lockouts = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "auth.lockout")))
        keys = list(s.scalars(select(LoginThrottle.key)))
    assert len(lockouts) == 1 and lockouts[0].detail["scope"] == "account"
    assert lockouts[0].object_id == "radiologist-a" and lockouts[0].outcome == "failure"
    assert all("radiologist-a" not in k for k in keys)  # names are hashed in the table
    # another account from another address is not affected
    r = _attempt(TestClient(c.app, client=("10.0.0.9", 50000)), "evaluator-a", PASSWORD)
    assert r.status_code == 303


def test_back_off_doubles_and_the_address_is_throttled_too(node: Node) -> None:
    node.settings.login_max_failures_per_address = 3
    c = world_client(node)
    for user in ("nobody-1", "nobody-2", "nobody-3"):  # spraying different names
        assert _attempt(c, user, "Not-The-Password-1").status_code == 401
    r = _attempt(c, "evaluator-a", PASSWORD)
    assert r.status_code == 429 and r.headers["retry-after"]
    with node.db.session() as s:
        row = s.get(LoginThrottle, "addr:testclient")
        assert row is not None and row.failures == 3
        first = row.locked_until_s - row.last_failure_s
        row.locked_until_s = 0  # the lock ran out; the next failure doubles it
    assert _attempt(c, "nobody-4", "Not-The-Password-1").status_code == 401
    with node.db.session() as s:
        row = s.get(LoginThrottle, "addr:testclient")
        assert row is not None
        assert row.locked_until_s - row.last_failure_s == 2 * first
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "auth.lockout"))
        assert {e.detail["scope"] for e in events} == {"address"}
    # another address still signs in
    elsewhere = TestClient(c.app, client=("10.0.0.9", 50000))
    assert sign_in(elsewhere, "evaluator-a")


def test_password_policy_refuses_short_common_and_user_name(node: Node) -> None:
    c = world_client(node)
    h = bearer(node, "admin-a")
    body = {"name": "newrad", "role": "radiologist", "facility": "HOSPA"}
    for weak, message in (
        ("Short-1", "at least 12 characters"),
        ("qwerty123456", "commonly used passwords"),
        ("1Q2W3E4R5T6Y", "commonly used passwords"),
        ("newrad", "at least 12 characters"),
    ):
        r = c.post("/api/users", headers=h, json={**body, "password": weak})
        assert r.status_code == 422 and message in r.json()["message"], (weak, r.text)
        assert weak not in r.text
    r = c.post(
        "/api/users", headers=h, json={**body, "name": "longusername1", "password": "LongUserName1"}
    )
    assert r.status_code == 422 and "user name" in r.json()["message"]
    assert (
        c.post("/api/users", headers=h, json={**body, "password": NEW_PASSWORD}).status_code == 201
    )
    node.settings.password_min_length = (
        20  # PAIR_PASSWORD_MIN_LENGTH, through the self-service page
    )
    sign_in(c, "newrad", NEW_PASSWORD)
    t = token(c.get("/account/password", headers=HTML).text)
    r = c.post(
        "/account/password",
        data={
            "csrf_token": t,
            "current_password": NEW_PASSWORD,
            "new_password": "Ward7-Lumen-Quartz2",
            "confirm_password": "Ward7-Lumen-Quartz2",
        },
        headers=HTML,
    )
    assert r.status_code == 422 and "at least 20 characters" in r.text


def test_admin_lists_and_ends_sessions_of_own_facility_only(node: Node) -> None:
    c = world_client(node)
    rad = TestClient(c.app)
    sign_in(rad, "radiologist-a")
    other_b = TestClient(c.app)
    sign_in(other_b, "datamanager-b")
    ha, hb = bearer(node, "admin-a"), bearer(node, "admin-b")

    listed = c.get("/api/sessions", headers=ha).json()
    assert [s["user_name"] for s in listed] == ["radiologist-a"]
    rad_session = listed[0]["id"]
    listed_b = c.get("/api/sessions", headers=hb).json()
    assert [s["user_name"] for s in listed_b] == ["datamanager-b"]
    assert "radiologist-a" not in c.get("/api/sessions", headers=hb).text
    # B's admin cannot end A's session (404: not even its existence is told)
    assert c.delete(f"/api/sessions/{rad_session}", headers=hb).status_code == 404
    assert rad.get("/api/me").status_code == 200
    # non-admins may not list
    assert c.get("/api/sessions", headers=bearer(node, "radiologist-a")).status_code == 403
    assert c.delete(f"/api/sessions/{rad_session}", headers=ha).status_code == 204
    assert rad.get("/api/me").status_code == 401
    assert c.delete(f"/api/sessions/{rad_session}", headers=ha).status_code == 404

    # the portal page: admin A sees B's session nowhere, ends one of A's
    admin = TestClient(c.app)
    sign_in(admin, "admin-a")
    sign_in(rad, "radiologist-a")
    page = admin.get("/admin/sessions", headers=HTML)
    assert page.status_code == 200 and "radiologist-a" in page.text
    assert "datamanager-b" not in page.text and "this session" in page.text
    rad_id = next(
        s["id"]
        for s in c.get("/api/sessions", headers=ha).json()
        if s["user_name"] == "radiologist-a"
    )
    b_id = c.get("/api/sessions", headers=hb).json()[0]["id"]
    t = token(page.text)
    r = admin.post(f"/admin/sessions/{b_id}/end", data={"csrf_token": t}, headers=HTML)
    assert r.status_code == 404 and other_b.get("/api/me").status_code == 200
    r = admin.post(f"/admin/sessions/{rad_id}/end", data={"csrf_token": t}, headers=HTML)
    assert r.status_code == 200 and f"Session {rad_id} of radiologist-a ended." in r.text
    assert rad.get("/api/me").status_code == 401
    with node.db.session() as s:
        ended = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "session.end")))
    assert {e.object_id for e in ended} == {str(rad_session), str(rad_id)}


def test_password_change_needs_the_current_one_and_ends_other_sessions(node: Node) -> None:
    c = world_client(node)
    laptop, phone = TestClient(c.app), TestClient(c.app)
    sign_in(laptop, "evaluator-a")
    sign_in(phone, "evaluator-a")
    t = token(laptop.get("/account/password", headers=HTML).text)
    form = {"csrf_token": t, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    r = laptop.post(
        "/account/password", data={**form, "current_password": "Wrong-Password-99"}, headers=HTML
    )
    assert r.status_code == 403 and "current password is wrong" in r.text
    assert phone.get("/api/me").status_code == 200
    r = laptop.post("/account/password", data={**form, "current_password": PASSWORD}, headers=HTML)
    assert r.status_code == 200 and "Password changed. 1 other session(s) signed out." in r.text
    assert laptop.get("/api/me").status_code == 200  # this session goes on
    assert phone.get("/api/me").status_code == 401  # the other one is gone
    assert _attempt(TestClient(c.app), "evaluator-a", PASSWORD).status_code == 401
    assert sign_in(TestClient(c.app), "evaluator-a", NEW_PASSWORD)

    # the API: bearer clients change their own password the same way
    h = bearer(node, "researcher-a")
    body = {"current_password": "Wrong-Password-99", "new_password": NEW_PASSWORD}
    assert c.post("/api/me/password", headers=h, json=body).status_code == 403
    body["current_password"] = PASSWORD
    assert (
        c.post(
            "/api/me/password", headers=h, json={**body, "new_password": "qwerty123456"}
        ).status_code
        == 422
    )
    assert c.post("/api/me/password", headers=h, json=body).status_code == 204
    with node.db.session() as s:
        assert accounts.authenticate_password(s, "researcher-a", NEW_PASSWORD)
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "user.password")))
    assert [e.outcome for e in events].count("failure") == 2
    assert all(NEW_PASSWORD not in str(e.detail) for e in events)


def test_security_headers_on_pages_api_static_and_errors(node: Node) -> None:
    c = world_client(node)
    h = bearer(node, "admin-a")
    sign_in(c, "admin-a")
    responses = [
        c.get("/login"),
        c.get("/", headers=HTML),
        c.get("/admin/users", headers=HTML),
        c.get("/no-such-page", headers=HTML),
        c.get("/api/me", headers=h),
        TestClient(c.app).get("/api/me"),  # 401
        c.get("/static/pair.css"),
        c.get("/healthz"),
        c.get("/openapi.json"),
    ]
    for r in responses:
        csp = r.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, r.url
        assert "unsafe-inline" not in csp, r.url
        assert r.headers["x-frame-options"] == "DENY", r.url
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["referrer-policy"] == "same-origin", r.url


def test_success_banner_never_renders_the_query_string(node: Node) -> None:
    c = world_client(node)
    t = sign_in(c, "admin-a")
    r = c.get("/admin/users?ok=<script>alert(1)</script>", headers=HTML)
    assert r.status_code == 200 and "alert(1)" not in r.text and "&lt;script" not in r.text
    r = c.post(
        "/admin/users",
        data={"csrf_token": t, "name": "flashy", "role": "radiologist", "facility_id": "HOSPA"},
        headers=HTML,
        follow_redirects=False,
    )
    assert r.status_code == 303 and "?" not in r.headers["location"]
    assert "x-pair-flash" not in r.headers
    page = c.get(r.headers["location"], headers=HTML)
    assert "User flashy created." in page.text
    assert "User flashy created." not in c.get("/admin/users", headers=HTML).text  # shown once


def test_nul_or_control_characters_in_the_user_name_are_a_clean_401(node: Node) -> None:
    c = world_client(node)
    for name in ("admin-a\x00", "adm\x00in-a", "a\u0007b", "x" * 300):
        r = _attempt(c, name, "Not-The-Password-1")
        assert r.status_code == 401 and "Unknown user or wrong password" in r.text, repr(name)
    with node.db.session() as s:
        names = list(s.scalars(select(AuditEvent.user_name).where(AuditEvent.outcome == "failure")))
    assert names and all("\x00" not in n and len(n) <= 128 for n in names)
