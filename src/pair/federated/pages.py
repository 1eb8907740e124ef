"""Portal pages of federated studies: the list and one study's curves, bars, matrix, timings."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.accounts.policy import Action, check_federated_role
from pair.audit.service import Actor
from pair.federated import plots, service
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, page_any_actor
from pair.web.templating import register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav(
    "Federated",
    "/federated",
    roles=(
        Role.ADMIN.value,
        Role.EVALUATOR.value,
        Role.RESEARCHER.value,
        Role.REGISTRY_ANALYST.value,
        Role.HUB_OPERATOR.value,
    ),
    order=65,
)


def page_federated(actor: Actor = Depends(page_any_actor)) -> Actor:
    check_federated_role(actor, Action.FEDERATED_READ)
    return actor


@router.get("/federated")
def studies(
    request: Request, session: Session = SessionDep, actor: Actor = Depends(page_federated)
) -> Response:
    rows = [service.summary(r) for r in service.list_studies(session, actor)]
    return render(request, "federated/list.html", {"studies": rows})


@router.get("/federated/{study_pk}")
def study(
    study_pk: int,
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_federated),
) -> Response:
    s = service.summary(service.get_study(session, actor, study_pk))
    return render(request, "federated/study.html", {"s": s, "figures": plots.figure_uris(s)})
