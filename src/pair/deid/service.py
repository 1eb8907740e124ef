"""De-identification as used by ingest, the offline ``pair deid`` command and admins."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.accounts.policy import Action, authorize
from pair.accounts.service import get_facility
from pair.audit.service import Actor, record
from pair.core.config import Settings
from pair.core.errors import Invalid
from pair.core.node import Node
from pair.deid.engine import Deidentifier, DeidResult
from pair.deid.models import PrivatePatientIdentity, PrivateStudyIdentity
from pair.deid.profile import profile_for
from pair.deid.store import SqlMappingStore


def deidentifier_for(session: Session, node_settings: Settings, facility: Facility) -> Deidentifier:
    """The engine for a facility: its profile (or the default), the site secret, its code as
    pseudonym prefix, and a mapping store inside ``session``'s transaction."""
    return Deidentifier(
        profile_for(facility.deid_profile),
        node_settings.site_secret,
        SqlMappingStore(session, facility.id),
        facility.code,
        node_settings.uid_root,
    )


def set_facility_profile(
    session: Session, facility: Facility, text: str | None, actor: Actor | None = None
) -> None:
    """Validate and store a facility's profile YAML (None restores the site default)."""
    actor = actor or Actor.system()
    authorize(
        actor,
        Action.DEID_PROFILE_WRITE,
        facility.id,
        missing=f"No facility with id {facility.id}.",
    )
    if text is not None:
        profile_for(text)  # raises Invalid with the precise problem
    facility.deid_profile = text
    record(
        session, actor, "deid.profile.set", "facility", str(facility.id), facility_id=facility.id
    )


def export_mapping(
    session: Session, facility_id: int, *, actor: Actor | None = None
) -> list[dict[str, Any]]:
    """The re-identification mapping of one facility (contains PHI: admins only).

    One row per de-identified study; patients without a recorded study get one row too.
    """
    actor = actor or Actor.system(facility_id=facility_id)
    authorize(actor, Action.DEID_MAPPING_EXPORT, facility_id, missing="No such facility.")
    patients = list(
        session.scalars(
            select(PrivatePatientIdentity)
            .where(PrivatePatientIdentity.facility_id == facility_id)
            .order_by(PrivatePatientIdentity.pseudonym)
        )
    )
    studies: dict[str, list[PrivateStudyIdentity]] = {}
    for st in session.scalars(
        select(PrivateStudyIdentity)
        .where(PrivateStudyIdentity.facility_id == facility_id)
        .order_by(PrivateStudyIdentity.id)
    ):
        studies.setdefault(st.pseudonym, []).append(st)
    rows: list[dict[str, Any]] = []
    for p in patients:
        base = {
            "pseudonym": p.pseudonym,
            "original_patient_id": p.original_patient_id,
            "original_patient_name": p.original_patient_name,
            "original_issuer": p.original_issuer,
            "date_shift_days": p.date_shift_days,
        }
        for st in studies.get(p.pseudonym) or [None]:  # type: ignore[list-item]
            rows.append(
                base
                | {
                    "original_study_uid": st.original_study_uid if st else "",
                    "original_accession_number": st.original_accession_number if st else "",
                    "study_uid": st.study_uid if st else "",
                }
            )
    record(
        session,
        actor,
        "deid.mapping.export",
        "facility",
        str(facility_id),
        detail={"rows": len(rows)},
        facility_id=facility_id,
    )
    return rows


EXPORT_COLUMNS = (
    "pseudonym",
    "original_patient_id",
    "original_patient_name",
    "original_issuer",
    "date_shift_days",
    "original_study_uid",
    "original_accession_number",
    "study_uid",
)


@dataclass
class FolderSummary:
    """Outcome of ``deidentify_folder``. Paths of written/quarantined files are output-relative
    (they contain only new UIDs); rejected paths are source-relative and stay local."""

    written: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, list[str]]] = field(default_factory=list)
    flagged: list[tuple[str, list[str]]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": len(self.written),
            "quarantined": [{"file": f, "reasons": r} for f, r in self.quarantined],
            "flagged_burned_in_risk": [{"file": f, "reasons": r} for f, r in self.flagged],
            "rejected": len(self.rejected),
        }


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read(path: Path) -> tuple[Any, str | None]:
    try:
        ds = dcmread(path)
    except InvalidDicomError:
        return None, "not a DICOM file (no DICM preamble and not parseable)"
    except Exception as exc:  # truncated or corrupt files raise many different errors
        return None, f"unreadable DICOM ({type(exc).__name__})"
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            return None, f"missing {keyword}"
    return ds, None


def _save(result: DeidResult, path: Path) -> None:
    _write_atomic(path, lambda tmp: result.dataset.save_as(tmp, enforce_file_format=True))


def deidentify_folder(
    node: Node,
    facility: Facility | str | int,
    src: Path,
    dst: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> FolderSummary:
    """De-identify every file under ``src`` into ``dst`` with the node's engine and keys.

    Layout: ``dst/<pseudonym>/<study uid>/<series uid>/<sop uid>.dcm``; instances with residual
    PHI go to ``dst/quarantine/<sop uid>.dcm`` with ``<sop uid>.json`` giving the reasons (tag
    paths and kinds, never values). One transaction per file, so a crash loses at most one.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.is_dir():
        raise Invalid(f"Source {src} is not a directory.")
    if dst == src or src in dst.parents:
        skip: Path | None = dst
    else:
        skip = None
    files = sorted(
        p for p in src.rglob("*") if p.is_file() and not (skip is not None and skip in p.parents)
    )
    with node.db.session() as s:
        facility_id = (
            facility.id if isinstance(facility, Facility) else get_facility(s, facility).id
        )
    summary = FolderSummary()
    for n, path in enumerate(files, 1):
        rel = str(path.relative_to(src))
        ds, reason = _read(path)
        if ds is None:
            summary.rejected.append((rel, reason or "unreadable"))
        else:
            try:
                with node.db.session() as s:
                    fac = s.get(Facility, facility_id)
                    assert fac is not None
                    result = deidentifier_for(s, node.settings, fac).deidentify(ds)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                # malformed element values pydicom cannot convert; nothing was written
                summary.rejected.append((rel, f"cannot de-identify ({type(exc).__name__})"))
                if progress is not None:
                    progress(n, len(files))
                continue
            out = result.dataset
            sop = str(out.SOPInstanceUID)
            if result.quarantined:
                target = dst / "quarantine" / f"{sop}.dcm"
                _save(result, target)
                reasons = [f.message for f in result.findings]
                body = {
                    "sop_instance_uid": sop,
                    "findings": [f.as_dict() for f in result.findings],
                    "burned_in_risk": result.burned_in_risk,
                }
                _write_atomic(
                    target.with_suffix(".json"),
                    lambda tmp, body=body: tmp.write_text(json.dumps(body, indent=2)),  # type: ignore[misc]
                )
                summary.quarantined.append((str(target.relative_to(dst)), reasons))
            else:
                target = (
                    dst
                    / result.pseudonym
                    / str(out.StudyInstanceUID)
                    / str(out.SeriesInstanceUID)
                    / f"{sop}.dcm"
                )
                _save(result, target)
                summary.written.append(str(target.relative_to(dst)))
                if result.burned_in_risk:
                    summary.flagged.append((str(target.relative_to(dst)), result.burned_in_risk))
        if progress is not None:
            progress(n, len(files))
    dst.mkdir(parents=True, exist_ok=True)
    _write_atomic(
        dst / "deid-summary.json",
        lambda tmp: tmp.write_text(json.dumps(summary.as_dict(), indent=2)),
    )
    with node.db.session() as s:
        record(
            s,
            Actor.system(facility_id=facility_id),
            "deid.folder",
            "facility",
            str(facility_id),
            detail={
                "written": len(summary.written),
                "quarantined": len(summary.quarantined),
                "rejected": len(summary.rejected),
            },
        )
    return summary
