"""Portal page: the browsable CDE catalog (sets → elements → values, codes, verification)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from pair.audit.service import Actor
from pair.cde.catalog import catalog
from pair.web.csrf import csrf_protect
from pair.web.deps import page_actor
from pair.web.templating import register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav("CDE catalog", "/cdes", order=40)


@router.get("/cdes")
def cde_catalog(request: Request, _: Actor = Depends(page_actor)) -> Response:
    """Every shipped set; ``?set=ID`` opens one (content only, no case data: not audited)."""
    cat = catalog()
    sets = list(cat.sets.values())
    chosen = request.query_params.get("set") or (sets[0].id if sets else "")
    current = cat.set(chosen) if chosen else None
    counts = {
        s.id: {
            status: sum(1 for e in s.elements if e.verification == status)
            for status in ("verified", "inferred", "unassigned", "local")
        }
        for s in sets
    }
    return render(request, "cde/catalog.html", {"sets": sets, "cset": current, "counts": counts})
