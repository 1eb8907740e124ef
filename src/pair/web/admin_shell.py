"""The administration section's shell: its page dependency and tab bar.

Several capabilities add a tab under ``/admin`` (the admin package's users, tokens, AE titles,
de-identification and audit; the repository's quarantine review; the accounts' sessions), so
the tabs and the layout template (``web/templates/admin/_layout.html``) live here, below them.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from pair.accounts.models import Role
from pair.accounts.policy import Action
from pair.web.deps import page_may
from pair.web.templating import render

# facility admins and the node operator; what each may do to which facility is decided by
# ``pair.accounts.policy`` inside the services (another facility's objects are 404)
admin_only = page_may(Action.USER_LIST)

TABS = [
    ("Users", "/admin/users"),
    ("Tokens", "/admin/tokens"),
    ("AE titles", "/admin/ae-titles"),
    ("De-identification", "/admin/deid"),
    ("Quarantine", "/admin/quarantine"),
    ("Burned-in review", "/admin/burned-in"),
    ("Audit log", "/admin/audit"),
    ("Sessions", "/admin/sessions"),
]


def admin_tabs(request: Request) -> list[tuple[str, str]]:
    """The operator reviews no quarantined or flagged instance (patient data): no such tabs."""
    user = getattr(request.state, "user", None)
    if user is not None and user.role == Role.NODE_OPERATOR.value:
        return [t for t in TABS if t[1] not in ("/admin/quarantine", "/admin/burned-in")]
    return TABS


def render_admin(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> Response:
    """Render an administration page (template ``name``) with the tab bar."""
    ctx.setdefault("tabs", admin_tabs(request))
    return render(request, name, ctx, status)
