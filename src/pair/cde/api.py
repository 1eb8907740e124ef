"""Read-only CDE catalog routes (any authenticated role)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from pair.audit.service import Actor
from pair.cde.catalog import catalog
from pair.web.deps import current_actor

router = APIRouter(prefix="/api/cdes", tags=["cde"])


@router.get("")
def list_cdes(actor: Actor = Depends(current_actor)) -> list[dict[str, Any]]:
    """Every shipped set with its elements and their verification status."""
    return catalog().summary()


@router.get("/{identifier}")
def get_cde(identifier: str, actor: Actor = Depends(current_actor)) -> dict[str, Any]:
    """One set (``RDES296``) or element (``RDE1360``) in RadElement JSON."""
    return catalog().lookup(identifier)
