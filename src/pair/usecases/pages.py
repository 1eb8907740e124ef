"""Portal pages for use cases: browse/search, view, author and revise (one input per scalar
field, built from the JSON Schema by ``pair.usecases.form``), review with comments, and a diff
between versions."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from pair.accounts import policy
from pair.accounts.models import Role
from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.core.errors import Invalid
from pair.usecases import export, service
from pair.usecases import form as authoring
from pair.usecases.spec import SHIPPED_DIR, load_file, schema
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, page_actor, page_may
from pair.web.templating import register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav("Use cases", "/usecases", order=45)
TEMPLATE_FILE = SHIPPED_DIR / "covid19-cxr-pattern.yaml"  # the example a new draft starts from


def sections() -> list[dict[str, Any]]:
    """The form's fields: every top-level section of the schema except the version marker."""
    s = schema()
    return [
        {
            "key": key,
            "title": key.replace("_", " ").capitalize(),
            "required": key in s["required"],
            "fields": ", ".join(spec.get("required", [])),
            "help": spec.get("description", ""),
        }
        for key, spec in s["properties"].items()
        if key != "schema_version"
    ]


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)


async def _raw(request: Request) -> dict[str, str]:
    form = await request.form()
    return {f.name: str(form.get(f.name, "")) for f in authoring.all_fields()}


@router.get("/usecases")
def browse(
    request: Request, session: Session = SessionDep, _: Actor = Depends(page_actor)
) -> Response:
    q = request.query_params.get("q") or None
    status = request.query_params.get("status") or None
    service.ensure_shipped(session)
    items = service.list_usecases(session, q, status, limit=500).items
    return render(request, "usecases/list.html", {"items": items, "q": q or "", "status": status})


def _author_form(
    request: Request, raw: dict[str, str], action: str, title: str, error: Any = None
) -> Response:
    ctx: dict[str, Any] = {
        "sections": authoring.sections(),
        "values": raw,
        "action": action,
        "title": title,
        "errors": {},
    }
    if error is not None:
        ctx["flash"], ctx["flash_kind"], ctx["problems"] = error.message, "error", error.details
        ctx["errors"] = authoring.field_errors(list(error.details or []))
    return render(request, "usecases/edit.html", ctx, 422 if error is not None else 200)


@router.get("/usecases/new")
def new_form(request: Request, _: Actor = Depends(page_actor)) -> Response:
    doc = load_file(TEMPLATE_FILE).document
    doc["overview"] = {**doc["overview"], "id": "", "title": ""}
    return _author_form(request, authoring.values(doc), "/usecases/new", "New use case")


@router.post("/usecases/new")
async def create(
    request: Request, session: Session = SessionDep, actor: Actor = Depends(page_actor)
) -> Response:
    raw = await _raw(request)
    try:
        row = service.create_draft(session, actor, authoring.document(raw))
    except Invalid as exc:
        session.rollback()
        return _author_form(request, raw, "/usecases/new", "New use case", exc)
    return RedirectResponse(f"/usecases/{row.usecase_id}", status_code=303)


@router.get("/usecases/{usecase_id}")
def view(
    usecase_id: str,
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    v = request.query_params.get("version")
    row = service.get(session, usecase_id, int(v) if v and v.isdigit() else None)
    newest = service.get(session, usecase_id)
    ctx = {
        "row": row,
        "newest": newest,
        "markdown_sections": {s["key"]: _yaml(row.document.get(s["key"])) for s in sections()},
        "sections": sections(),
        "versions": service.versions(session, usecase_id),
        "comments": service.comments(session, usecase_id),
        "is_author": newest.author == actor.user_name or actor.role == Role.ADMIN.value,
        "is_panel": policy.may_role(actor, Action.USECASE_PUBLISH),
    }
    return render(request, "usecases/view.html", ctx)


@router.get("/usecases/{usecase_id}/edit")
def edit_form(
    usecase_id: str, request: Request, session: Session = SessionDep, _: Actor = Depends(page_actor)
) -> Response:
    row = service.get(session, usecase_id)
    action = f"/usecases/{usecase_id}/edit"
    return _author_form(request, authoring.values(row.document), action, f"Revise {usecase_id}")


@router.post("/usecases/{usecase_id}/edit")
async def revise(
    usecase_id: str,
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    raw = await _raw(request)
    try:
        service.revise(session, actor, usecase_id, authoring.document(raw))
    except Invalid as exc:
        session.rollback()
        action = f"/usecases/{usecase_id}/edit"
        return _author_form(request, raw, action, f"Revise {usecase_id}", exc)
    return RedirectResponse(f"/usecases/{usecase_id}", status_code=303)


@router.post("/usecases/{usecase_id}/submit")
def submit(
    usecase_id: str, session: Session = SessionDep, actor: Actor = Depends(page_actor)
) -> Response:
    service.submit(session, actor, usecase_id)
    return RedirectResponse(f"/usecases/{usecase_id}", status_code=303)


@router.post("/usecases/{usecase_id}/comment")
async def comment(
    usecase_id: str,
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    form = await request.form()
    service.comment(session, actor, usecase_id, str(form.get("text", "")))
    return RedirectResponse(f"/usecases/{usecase_id}#comments", status_code=303)


PANEL = page_may(Action.USECASE_PUBLISH)


@router.post("/usecases/{usecase_id}/publish")
def publish(
    usecase_id: str,
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.USECASE_PUBLISH)),
) -> Response:
    service.publish(session, actor, usecase_id)
    return RedirectResponse(f"/usecases/{usecase_id}", status_code=303)


@router.post("/usecases/{usecase_id}/retire")
def retire(
    usecase_id: str,
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.USECASE_PUBLISH)),
) -> Response:
    service.retire(session, actor, usecase_id)
    return RedirectResponse(f"/usecases/{usecase_id}", status_code=303)


@router.get("/usecases/{usecase_id}/diff")
def diff(
    usecase_id: str,
    request: Request,
    session: Session = SessionDep,
    _: Actor = Depends(page_actor),
) -> Response:
    rows = service.versions(session, usecase_id)
    try:
        a = int(request.query_params.get("from", rows[0].version))
        b = int(request.query_params.get("to", rows[-1].version))
    except ValueError:
        raise Invalid("from and to are version numbers.") from None
    old, new = service.get(session, usecase_id, a), service.get(session, usecase_id, b)
    changes = export.diff(old.document, new.document)
    ctx = {"usecase_id": usecase_id, "a": a, "b": b, "changes": changes, "versions": rows}
    return render(request, "usecases/diff.html", ctx)
