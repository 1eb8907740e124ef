"""Algorithm manifests checked against the use case they declare (``use_case_id``).

The output's ``cde_element`` must be one of the use case's outputs, every class's ``cde_code``
one of that output's values, and every modality the algorithm accepts one the use case names.
A manifest whose ``use_case_id`` names no published use case is accepted unchanged (local and
demo ids predate the registry; drafts do not bind); one naming a retired use case is refused.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from pair.algorithms.manifest import Manifest
from pair.core.errors import Invalid
from pair.usecases.service import in_force
from pair.usecases.spec import UseCase


def problems(m: Manifest, uc: UseCase) -> list[str]:
    found: list[str] = []
    extra = [mod for mod in m.modality if mod not in uc.modalities]
    if extra:
        found.append(
            f"modality: {', '.join(extra)} not accepted by use case {uc.id} "
            f"(modalities: {', '.join(uc.modalities)})"
        )
    elements = ", ".join(o.cde_element for o in uc.outputs)
    eid = m.output.cde_element
    if eid is None:
        found.append(f"output.cde_element: missing; use case {uc.id} outputs {elements}")
        return found
    out = uc.output(eid)
    if out is None:
        found.append(
            f"output.cde_element: {eid} is not an output of use case {uc.id} (outputs: {elements})"
        )
        return found
    for i, c in enumerate(m.output.classes):
        if out.value_set and c.cde_code is None:
            found.append(f"output.classes[{i}] ({c.name}): no cde_code; {eid} is coded")
        elif c.cde_code is not None and c.cde_code not in out.value_set:
            allowed = ", ".join(out.value_set) or "none (not a coded element)"
            found.append(
                f"output.classes[{i}] ({c.name}): {c.cde_code} is not in use case {uc.id}'s "
                f"value set for {eid} ({allowed})"
            )
    return found


def check_manifest(session: Session, m: Manifest) -> None:
    """Raise ``Invalid`` (422) listing every mismatch with the declared use case."""
    uc = in_force(session, m.use_case_id)
    if uc is None:
        return
    found = problems(m, uc)
    if found:
        raise Invalid(
            f"Algorithm {m.id} {m.version} does not fit use case {uc.ref}: " + "; ".join(found),
            details=found,
        )
