"""Registry pages: ``/registry`` (dashboard), ``/registry/cohort`` (builder: counts, drill-down,
export buttons) and ``/registry/quality`` (data quality per site)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.accounts.policy import REGISTRY_ROLES, Action, may_role
from pair.audit.service import Actor
from pair.clinical.dictionary import load_dictionary
from pair.core.errors import Invalid
from pair.core.node import Node
from pair.registry import service
from pair.registry.cohort import CohortQuery, from_terms
from pair.registry.dashboard import dashboard, plots
from pair.registry.export import FORMATS, KINDS
from pair.registry.quality import quality_report, rules
from pair.reporting.loader import modules
from pair.repository.models import Series
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, get_node, page_may
from pair.web.templating import register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav("Registry", "/registry", roles=tuple(REGISTRY_ROLES[Action.REGISTRY_VIEW]), order=60)
PAGE = 25
FORM_ONLY = ("terms", "page", "run")


@router.get("/registry")
def registry_dashboard(
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.REGISTRY_VIEW)),
) -> Response:
    d = dashboard(session, actor)
    return render(request, "registry/dashboard.html", {"d": d, "plots": plots(d)})


def _form_terms(request: Request) -> list[tuple[str, str]]:
    """Form fields plus the free-text 'more criteria' lines (``cde.RDE1359=RDE1359.1``)."""
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k not in FORM_ONLY]
    for line in request.query_params.get("terms", "").splitlines():
        key, sep, value = line.partition("=")
        if line.strip():
            if not sep:
                raise Invalid(f"Criterion {line.strip()!r} is not key=value.")
            pairs.append((key.strip(), value.strip()))
    return pairs


@router.get("/registry/cohort")
def registry_cohort(
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.REGISTRY_VIEW)),
) -> Response:
    """Counts for everyone who reads the registry; the drill-down and exports for analysts."""
    context: dict[str, Any] = {
        "sites": list(session.scalars(select(Facility).order_by(Facility.code))),
        "modalities": sorted(m for m in session.scalars(select(Series.modality).distinct()) if m),
        "dictionary": load_dictionary(),
        "report_modules": {
            mid: [c.value for c in m.by_id[m.summary_element].choices]
            for mid, m in modules().items()
            if m.summary_element and m.by_id[m.summary_element].choices
        },
        "terms_text": request.query_params.get("terms", ""),
        "q": CohortQuery(),
        "counts": None,
        "page": None,
        "error": None,
        "may_query": may_role(actor, Action.REGISTRY_QUERY),
        "may_dicom": may_role(actor, Action.REGISTRY_DICOM) and service.is_approved(session, actor),
        "exports": [f"{k}.{f}" for k in KINDS for f in FORMATS],
    }
    status = 200
    try:
        q = from_terms(_form_terms(request))
        context["q"] = q
        context["query_string"] = urlencode(q.to_terms())
        if request.query_params:
            context["counts"] = service.cohort_counts(session, actor, q)
            if context["may_query"]:
                page = max(1, int(request.query_params.get("page", "1") or 1))
                context["page"] = service.cohort_studies(
                    session, actor, q, limit=PAGE, offset=(page - 1) * PAGE
                )
                context["page_no"] = page
    except (Invalid, ValueError) as exc:
        context["error"], status = str(exc), 422
    return render(request, "registry/cohort.html", context, status_code=status)


@router.get("/registry/quality")
def registry_quality(
    request: Request,
    session: Session = SessionDep,
    node: Node = Depends(get_node),
    actor: Actor = Depends(page_may(Action.REGISTRY_QUALITY)),
) -> Response:
    sites = quality_report(session, actor, node.settings.registry_late_days)
    return render(
        request,
        "registry/quality.html",
        {"sites": sites, "rules": rules(), "late_days": node.settings.registry_late_days},
    )
