"""Read-only API of federated studies at the hub (``accounts.policy`` federated block)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from pair.accounts.policy import Action, check_federated_role
from pair.audit.service import Actor
from pair.core.errors import NotFound
from pair.federated import plots, service
from pair.web.deps import SessionDep, authenticated_actor

router = APIRouter(prefix="/api/federated", tags=["federated"])


def federated_reader(actor: Actor = Depends(authenticated_actor)) -> Actor:
    check_federated_role(actor, Action.FEDERATED_READ)
    return actor


@router.get("/studies")
def list_studies(
    session: Session = SessionDep, actor: Actor = Depends(federated_reader)
) -> list[dict[str, Any]]:
    keys = (
        "id",
        "study_id",
        "version",
        "run_name",
        "title",
        "strategy",
        "mode",
        "status",
        "sites",
        "rounds_planned",
        "rounds_done",
        "engine",
        "algorithm",
    )
    return [
        {k: v for k, v in service.summary(r).items() if k in keys}
        for r in service.list_studies(session, actor)
    ]


@router.get("/studies/{study_pk}")
def one(
    study_pk: int, session: Session = SessionDep, actor: Actor = Depends(federated_reader)
) -> dict[str, Any]:
    return service.summary(service.get_study(session, actor, study_pk))


@router.get("/studies/{study_pk}/figures/{figure}")
def figure_png(
    study_pk: int,
    figure: str,
    session: Session = SessionDep,
    actor: Actor = Depends(federated_reader),
) -> Response:
    """One figure as PNG: curves, bars, matrix or timing."""
    if figure not in plots.FIGURES:
        raise NotFound(f"No figure {figure!r}; figures: {', '.join(plots.FIGURES)}.")
    png = plots.figure_png(service.summary(service.get_study(session, actor, study_pk)), figure)
    if png is None:
        raise NotFound(f"Figure {figure!r} has no data for this study.")
    return Response(png, media_type="image/png")
