"""Jinja2 environment shared by every capability's pages.

Templates are looked up in ``pair/web/templates`` first and then in every capability package's
``templates/`` folder (ChoiceLoader), so reporting or evaluation pages plug in by adding
``pair/<cap>/templates/<cap>/*.html`` that extend ``base.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

import pair
from pair.web.csrf import csrf_token
from pair.web.sessions import pop_flash

PACKAGE_ROOT = Path(pair.__file__).parent


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    roles: frozenset[str]  # empty: every signed-in user
    order: int = 50


_NAV: list[NavItem] = []


def register_nav(label: str, href: str, roles: tuple[str, ...] = (), order: int = 50) -> None:
    """Capabilities add their top-level pages to the navigation bar (role-aware)."""
    if any(item.href == href for item in _NAV):
        return
    _NAV.append(NavItem(label, href, frozenset(roles), order))
    _NAV.sort(key=lambda i: (i.order, i.label))


@dataclass(frozen=True)
class HomeCard:
    """A number on the home page that links to where the work is."""

    label: str
    value: int
    href: str
    warn: bool = False


HomeCards = Callable[[Session, Any], list[HomeCard]]
_HOME: list[HomeCards] = []


def register_home_cards(cards: HomeCards) -> None:
    """Capabilities add counts to the home page (called with the session and the user)."""
    if cards not in _HOME:
        _HOME.append(cards)


def home_cards(session: Session, user: Any) -> list[HomeCard]:
    return [card for cards in _HOME for card in cards(session, user)]


def nav_for(role: str | None) -> list[NavItem]:
    if role is None:
        return []
    if role == "node-operator":  # node administration only: no facility data pages
        return [i for i in _NAV if role in i.roles or i.href == "/"]
    return [i for i in _NAV if not i.roles or role == "admin" or role in i.roles]


def _template_dirs() -> list[str]:
    dirs = [str(PACKAGE_ROOT / "web" / "templates")]
    for pkg in sorted(PACKAGE_ROOT.iterdir()):
        if pkg.name != "web" and (pkg / "templates").is_dir():
            dirs.append(str(pkg / "templates"))
    return dirs


def _query(request: Request, **changes: Any) -> str:
    """The current query string with some parameters replaced (paging, sorting links)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urlencode(params)


env = Environment(
    loader=ChoiceLoader([FileSystemLoader(d) for d in _template_dirs()]),
    autoescape=select_autoescape(["html", "xml"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _dicomdate(value: str | None) -> str:
    """20200314 -> 2020-03-14 (de-identified, shifted dates)."""
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or "—"


def _epoch(seconds: float | None) -> str:
    """Unix seconds -> 2026-12-06 02:30 (UTC)."""
    if not seconds:
        return "—"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


env.filters["dicomdate"] = _dicomdate
env.filters["epoch"] = _epoch
env.globals["version"] = pair.__version__
env.globals["query"] = _query


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """Render a page with the signed-in user, navigation and CSRF token in its context."""
    user = getattr(request.state, "user", None)
    ctx: dict[str, Any] = {
        "request": request,
        "user": user,
        "nav": nav_for(user.role if user else None),
        "csrf_token": csrf_token(request),
        "path": request.url.path,
    }
    ctx.update(context or {})
    if "flash" not in ctx:  # a message from the previous request (flash()), never the URL
        pending = pop_flash(request)
        if pending is not None:
            ctx["flash_kind"], ctx["flash"] = pending
    html = env.get_template(name).render(ctx)
    return HTMLResponse(html, status_code=status_code)
