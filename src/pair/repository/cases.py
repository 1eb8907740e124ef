"""A case (the repository's pseudonymous patient) as a member of its facility sees it.

Every capability that opens a case by id (the viewer, clinical data, reports) asks here, so
another facility's case reads as 'not found' the same way everywhere.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from pair.audit.service import Actor
from pair.core.errors import NotFound
from pair.repository.models import Patient


def facility_scope(actor: Actor) -> int | None:
    """Every user, admins included, sees their own facility's cases (as DICOMweb does);
    ``search_cases(session, None, ...)`` is the node-wide form for hub/registry code."""
    return actor.facility_id


def get_case(session: Session, actor: Actor, case_id: int) -> Patient:
    """The case if the actor may see it; another facility's case reads as 'not found'."""
    patient = session.get(Patient, case_id)
    scope = facility_scope(actor)
    if patient is None or (scope is not None and patient.facility_id != scope):
        raise NotFound(f"No case {case_id} in your facility.")
    return patient
