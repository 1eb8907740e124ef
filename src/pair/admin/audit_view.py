"""How the audit log reads on a page and in an export: detail as key/value rows, object ids
as links to the object's page, and a CSV of the same filtered events."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session

from pair.admin.service import AuditQuery, search_audit
from pair.audit.models import AuditEvent
from pair.audit.service import Actor

# object type -> the portal page that shows it ({id} is the URL-quoted object id)
OBJECT_PAGES = {
    "report": "/reports/{id}",
    "case": "/cases?text={id}",
    "evaluation_run": "/evaluations/{id}",
    "usecase": "/usecases/{id}",
    "quarantine_item": "/admin/quarantine/{id}",
    "user": "/admin/users",
}
EXPORT_LIMIT = 50_000
EXPORT_COLUMNS = ("at", "user_name", "action", "object_type", "object_id", "outcome", "source")
MAX_VALUE = 160


def object_link(object_type: str, object_id: str) -> str | None:
    page = OBJECT_PAGES.get(object_type)
    return page.format(id=quote(object_id, safe="")) if page and object_id else None


def detail_rows(detail: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Readable key/value rows; long values are cut (the export keeps them whole)."""
    rows = []
    for key, value in (detail or {}).items():
        if isinstance(value, str | int | float | bool) or value is None:
            text = "—" if value is None else str(value)
        elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            text = ", ".join(str(v) for v in value)
        else:
            text = json.dumps(value, sort_keys=True, separators=(", ", ": "))
        if len(text) > MAX_VALUE:
            text = text[: MAX_VALUE - 1] + "…"
        rows.append((key.replace("_", " "), text))
    return rows


def export_csv(session: Session, q: AuditQuery, actor: Actor) -> Iterator[str]:
    """The filtered events as CSV (newest first, at most ``EXPORT_LIMIT``), detail as JSON."""
    export = replace(q, limit=EXPORT_LIMIT, offset=0)
    _, events = search_audit(session, export, actor)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*EXPORT_COLUMNS, "detail"])
    yield _drain(buffer)
    for event in events:
        writer.writerow([*(_cell(event, c) for c in EXPORT_COLUMNS), _detail(event)])
        yield _drain(buffer)


def _cell(event: AuditEvent, column: str) -> str:
    value = getattr(event, column)
    return value.isoformat() if column == "at" else str(value or "")


def _detail(event: AuditEvent) -> str:
    return json.dumps(event.detail, sort_keys=True) if event.detail else ""


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
