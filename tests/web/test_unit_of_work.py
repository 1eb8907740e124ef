"""One unit of work per request: the request-scoped session (``pair.web.deps.SessionDep``)
commits after the route returns and before the response is sent, and rolls back when the
route raises; route modules never commit by hand."""

from __future__ import annotations

import ast
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts import service
from pair.accounts.models import Facility, User
from pair.audit.models import AuditEvent
from pair.core.errors import Conflict
from pair.core.node import Node
from pair.web.app import create_app
from pair.web.deps import SessionDep
from tests.conftest import admin_test_client
from tests.web.test_pages import HTML, token

SRC = Path(__file__).resolve().parents[2] / "src" / "pair"
Message = MutableMapping[str, Any]


def _route_modules() -> list[Path]:
    """Every module that declares HTTP routes (it builds an ``APIRouter``)."""
    return sorted(p for p in SRC.rglob("*.py") if "APIRouter(" in p.read_text(encoding="utf-8"))


def _bare_commits(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.relative_to(SRC.parent)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "commit"
    ]


def test_route_modules_never_commit_by_hand() -> None:
    modules = _route_modules()
    assert len(modules) >= 10, modules  # the scan finds the route modules at all
    found = [hit for path in modules for hit in _bare_commits(path)]
    assert not found, (
        "Routes leave committing to SessionDep (use web.deps.commit_before_refusal where a "
        f"refused request must keep a write): {found}"
    )


def _facility_names(node: Node) -> set[str]:
    with node.db.session() as s:
        return set(s.scalars(select(Facility.name)))


def test_route_that_raises_after_writing_leaves_nothing(node: Node) -> None:
    app = create_app(node)

    def write_then_fail(session: Session = SessionDep) -> None:
        service.create_facility(session, "Ghost Hospital", "GHOST")
        session.flush()  # the row reached the database inside the transaction
        raise Conflict("refused after writing")

    app.add_api_route("/test/write-then-fail", write_then_fail, methods=["POST"])
    r = TestClient(app).post("/test/write-then-fail")
    assert r.status_code == 409 and r.json()["message"] == "refused after writing"
    assert "Ghost Hospital" not in _facility_names(node)


def _probe_at_response_start(
    app: FastAPI, probe: Callable[[], object]
) -> tuple[Callable[..., Awaitable[None]], list[object]]:
    """Wrap ``app`` so that ``probe`` runs, on its own connection, the moment the response's
    first message leaves the application: what it sees is what a client could already see."""
    seen: list[object] = []

    async def wrapped(scope: Message, receive: Any, send: Any) -> None:
        async def spy(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.append(probe())
            await send(message)

        await app(scope, receive, spy)

    return wrapped, seen


def test_successful_post_is_committed_before_the_response(node: Node) -> None:
    client, headers = admin_test_client(node)

    def user_stored() -> bool:
        with node.db.session() as s:
            return s.scalar(select(User.id).where(User.name == "dm2")) is not None

    wrapped, seen = _probe_at_response_start(client.app, user_stored)  # type: ignore[arg-type]
    probed = TestClient(wrapped)  # type: ignore[arg-type]
    body = {"name": "dm2", "role": "data-manager", "facility": "Hospital A"}
    r = probed.post("/api/users", headers=headers["admin"], json=body)
    assert r.status_code == 201, r.text
    assert seen == [True]  # durable before the first byte of the answer
    names = [u["name"] for u in probed.get("/api/users", headers=headers["admin"]).json()]
    assert "dm2" in names  # and the very next request sees it


def test_page_post_is_committed_before_the_redirect(node: Node) -> None:
    """A portal form (sign-in writes its audit row) answers 303 only after its writes are
    durable, so the page the browser loads next sees them."""
    with node.db.session() as s:
        fa = service.create_facility(s, "Hospital A", "HOSPA")
        service.create_user(s, fa, "rad", "radiologist", "Ward7-Lumen-Quartz")

    def login_audited() -> bool:
        with node.db.session() as s:
            found = s.scalar(
                select(AuditEvent.id).where(
                    AuditEvent.action == "portal.login", AuditEvent.outcome == "success"
                )
            )
            return found is not None

    wrapped, seen = _probe_at_response_start(create_app(node), login_audited)
    client = TestClient(wrapped)  # type: ignore[arg-type]
    t = token(client.get("/login", headers=HTML).text)
    seen.clear()
    form = {"username": "rad", "password": "Ward7-Lumen-Quartz", "csrf_token": t, "next": "/"}
    r = client.post("/login", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert seen == [True]
    assert client.get("/", headers=HTML, follow_redirects=False).status_code == 200
