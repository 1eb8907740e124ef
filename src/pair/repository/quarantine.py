"""Admin review of quarantined instances: what was found, and the three ways to decide.

An instance is quarantined because the residual-PHI scanner found a fragment of the original's
identifying values in the de-identified output. Storing that output unchanged would publish
the very PHI it was held for, so there is no plain release. The reviewer sees each offending
element (tag path, keyword or private name, masked value) and a preview of the image, then:

- ``remove_and_store``: remove the flagged elements from the held output;
- ``rerun_and_store``: de-identify the instance as received again with the strict profile
  (``data/strict-profile.yaml``: the Basic Profile with no options);
- ``reject``: discard it.

Both ways to store re-run the scanner on the result against the original's identifying values
(and the node's own pseudonym is never a finding); if it still finds PHI, the item stays
quarantined with the new findings. The held output of a stored item stays in the quarantine
store for audit (never served); the instance as received is deleted once the item is decided.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.accounts.policy import Action, authorize
from pair.audit.service import Actor, record, record_change
from pair.core.errors import Conflict, Invalid, NotFound, PairError
from pair.core.node import Node
from pair.db.base import utcnow
from pair.deid.engine import Deidentifier
from pair.deid.models import PrivatePatientIdentity
from pair.deid.profile import profile_for, strict_profile
from pair.deid.scanner import Finding, collect_phi, scan
from pair.deid.store import SqlMappingStore
from pair.dicom.parse import InvalidInstance, parse_bytes, to_part10_bytes
from pair.dicom.render import RenderOptions, render
from pair.repository.index import StoredFile, find_instance, index_instance
from pair.repository.ingest import content_store, quarantine_store
from pair.repository.models import QuarantineItem

log = logging.getLogger("pair.quarantine")

STATUSES = ("pending", "stored", "rejected", "released", "deleted")  # last two: before 0005
_STEP = re.compile(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)(?:\[(\d+)\])?")
_MASK_LIMIT = 12
PREVIEW_SIZE = (512, 512)


@dataclass
class Decision:
    """What a review action did: ``stored``, ``quarantined`` (PHI still found) or ``rejected``."""

    item_id: int
    outcome: str
    sop_instance_uid: str = ""
    study_uid: str = ""
    reasons: list[dict[str, Any]] = field(default_factory=list)


def mask(value: str) -> str:
    """The first character and asterisks: enough to recognise the kind of value, not the value."""
    text = "".join(c for c in value if c.isprintable()).strip()
    if not text:
        return ""
    return text[0] + "*" * min(len(text) - 1, _MASK_LIMIT - 1)


def own_item(session: Session, item_id: int, actor: Actor) -> QuarantineItem:
    """The item, when it belongs to the actor's facility (any other facility: 404)."""
    item = session.get(QuarantineItem, item_id)
    missing = f"No quarantine item {item_id} in your facility."
    if item is None:
        raise NotFound(missing)
    authorize(actor, Action.QUARANTINE_REVIEW, item.facility_id, missing=missing)
    return item


def _pending_item(session: Session, item_id: int, actor: Actor) -> QuarantineItem:
    """The facility's pending item, locked against a concurrent decision."""
    own_item(session, item_id, actor)
    item = session.scalar(
        select(QuarantineItem)
        .where(QuarantineItem.id == item_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if item is None or item.status != "pending":
        raise NotFound(f"No pending quarantine item {item_id} in your facility.")
    return item


def _locate(ds: Dataset, path: str) -> tuple[Dataset, int] | None:
    """The dataset holding the element at a scanner tag path, and its tag (None if absent)."""
    steps = list(_STEP.finditer(path))
    if not steps or steps[0].start() != 0:
        return None
    container: Dataset = ds
    if int(steps[0].group(1), 16) == 0x0002 and len(steps) == 1:
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return None
        container = meta
    for step in steps[:-1]:
        tag, index = Tag(int(step.group(1), 16), int(step.group(2), 16)), step.group(3)
        if tag not in container or index is None:
            return None
        items = container[tag].value or []
        if int(index) >= len(items):
            return None
        container = items[int(index)]
    last = steps[-1]
    tag = Tag(int(last.group(1), 16), int(last.group(2), 16))
    return (container, int(tag)) if tag in container else None


def _strings(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _describe(ds: Dataset | None, reason: dict[str, Any]) -> dict[str, Any]:
    """One finding for the reviewer: where, which element (by name), what kind, masked value."""
    path = str(reason.get("path", ""))
    out: dict[str, Any] = {
        "path": path,
        "tag": "",
        "keyword": "",
        "name": "",
        "private_creator": "",
        "vr": "",
        "kind": str(reason.get("kind", "")),
        "source": str(reason.get("source", "")),
        "message": str(reason.get("message", "") or reason.get("reason", "")),
        "masked_value": "",
        "present": False,
    }
    steps = list(_STEP.finditer(path))
    if steps:
        last = steps[-1]
        tag = int(last.group(1) + last.group(2), 16)
        out["tag"] = f"({last.group(1).upper()},{last.group(2).upper()})"
        out["keyword"] = str(keyword_for_tag(tag) or "")
    found = _locate(ds, path) if ds is not None else None
    if found is not None:
        container, tag = found
        elem = container[tag]
        out["present"] = True
        out["vr"] = str(elem.VR)
        out["name"] = str(elem.name)
        out["private_creator"] = str(getattr(elem, "private_creator", "") or "")
        out["masked_value"] = mask(_strings(elem.value))
    if not out["name"]:
        out["name"] = out["keyword"] or out["tag"]
    return out


def review(node: Node, session: Session, item_id: int, actor: Actor) -> dict[str, Any]:
    """The item with each finding described (masked values only while pending); audited."""
    item = own_item(session, item_id, actor)
    ds = _read_held(node, item) if item.status == "pending" else None
    record(session, actor, "quarantine.review", "quarantine_item", str(item.id))
    return {
        "id": item.id,
        "sop_instance_uid": item.sop_instance_uid,
        "study_uid": item.study_uid,
        "modality": item.modality,
        "status": item.status,
        "source": item.source,
        "created_at": item.created_at,
        "reviewed_by": item.reviewed_by,
        "reviewed_at": item.reviewed_at,
        "review_note": item.review_note,
        "original_kept": bool(item.original_path) and item.status == "pending",
        "has_image": ds is not None and "PixelData" in ds,
        "elements": [_describe(ds, r) for r in item.reasons if isinstance(r, dict)],
    }


def _read_held(node: Node, item: QuarantineItem) -> Dataset | None:
    try:
        return dcmread(io.BytesIO(quarantine_store(node).read(item.storage_path)))
    except FileNotFoundError:
        return None
    except Exception as exc:  # a held file pydicom cannot read: describe without values
        log.warning("quarantine item %s unreadable: %s", item.id, type(exc).__name__)
        return None


def preview_png(node: Node, session: Session, item_id: int, actor: Actor) -> bytes:
    """A PNG of the held image (first frame, at most 512 px), for the reviewer only."""
    item = own_item(session, item_id, actor)
    if item.status != "pending":
        raise NotFound(f"Quarantine item {item_id} is decided; its image is not shown.")
    ds = _read_held(node, item)
    if ds is None:
        raise NotFound(f"The file of quarantine item {item_id} is missing.")
    try:
        png = render(ds, 1, RenderOptions(viewport=PREVIEW_SIZE))
    except PairError:
        raise
    except Exception as exc:
        raise Invalid(f"The image cannot be rendered ({type(exc).__name__}).") from None
    record(session, actor, "quarantine.preview", "quarantine_item", str(item.id))
    return png


def _original(node: Node, session: Session, item: QuarantineItem, pseudonym: str) -> Dataset:
    """The instance as received, or for items quarantined before it was kept, the patient's
    original name and ID from the mapping store (what the scanner needs most)."""
    if item.original_path:
        return parse_bytes(quarantine_store(node).read(item.original_path)).dataset
    identity = session.scalar(
        select(PrivatePatientIdentity).where(
            PrivatePatientIdentity.facility_id == item.facility_id,
            PrivatePatientIdentity.pseudonym == pseudonym,
        )
    )
    if identity is None:
        raise Conflict(
            f"Quarantine item {item.id} has no kept original to check the result against; "
            "reject it and send the instance again."
        )
    ds = Dataset()
    ds.PatientName = identity.original_patient_name
    ds.PatientID = identity.original_patient_id
    return ds


def _excluded_kinds(facility: Facility) -> frozenset[str]:
    try:
        options = profile_for(facility.deid_profile).options
    except PairError:
        return frozenset()
    return frozenset({"institution"}) if options.retain_institution_identity else frozenset()


def _remove(container: Dataset, tag: int) -> None:
    """Remove one element, and its private creator when that leaves the block empty."""
    del container[tag]
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1 and element >= 0x1000:
        block = element >> 8
        tags = [int(elem.tag) for elem in container]
        if not any(t >> 16 == group and (t & 0xFFFF) >> 8 == block for t in tags):
            creator = (group << 16) | block
            if creator in container:
                del container[creator]


def remove_and_store(
    node: Node, item_id: int, actor: Actor, note: str = "", paths: list[str] | None = None
) -> Decision:
    """Remove the flagged elements (or ``paths``, a subset) from the held output, re-scan it
    and store it when clean."""
    with node.db.session() as session:
        item = _pending_item(session, item_id, actor)
        facility = session.get(Facility, item.facility_id)
        assert facility is not None
        held = parse_bytes(quarantine_store(node).read(item.storage_path))
        ds = held.dataset
        flagged = [str(r.get("path", "")) for r in item.reasons if isinstance(r, dict)]
        chosen = flagged if paths is None else [p for p in flagged if p in set(paths)]
        if not chosen:
            raise Invalid("Choose at least one of the flagged elements to remove.")
        for path in sorted(chosen, key=len, reverse=True):  # nested paths before parents
            found = _locate(ds, path)
            if found is not None:
                _remove(*found)
        pseudonym = str(ds.get("PatientID", "") or "")
        original = _original(node, session, item, pseudonym)
        findings = [
            f
            for f in scan(collect_phi(original), ds, (pseudonym,))
            if f.kind not in _excluded_kinds(facility)
        ]
        data = to_part10_bytes(ds, held.transfer_syntax_uid)
        return _store_or_hold(
            node, session, item, ds, data, findings, actor, note, "remove_and_store"
        )


def rerun_and_store(node: Node, item_id: int, actor: Actor, note: str = "") -> Decision:
    """De-identify the instance as received again with the strict profile; store when clean."""
    with node.db.session() as session:
        item = _pending_item(session, item_id, actor)
        if not item.original_path:
            raise Conflict(
                f"Quarantine item {item_id} was held before PAIR kept the instance as received; "
                "remove the flagged elements, or reject it and send it again."
            )
        facility = session.get(Facility, item.facility_id)
        assert facility is not None
        try:
            parsed = parse_bytes(quarantine_store(node).read(item.original_path))
        except InvalidInstance as exc:
            raise Invalid(f"The kept original cannot be read: {exc.message}") from None
        deid = Deidentifier(
            strict_profile(),
            node.settings.site_secret,
            SqlMappingStore(session, facility.id),
            facility.code,
            node.settings.uid_root,
        )
        try:
            result = deid.deidentify(parsed.dataset)
            data = to_part10_bytes(result.dataset, parsed.transfer_syntax_uid)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # element values pydicom cannot convert (the ingest pipeline rejects the same)
            raise Invalid(
                f"The kept original cannot be de-identified ({type(exc).__name__})."
            ) from None
        return _store_or_hold(
            node, session, item, result.dataset, data, result.findings, actor, note, "rerun"
        )


def _decided(item: QuarantineItem, actor: Actor, note: str, status: str) -> None:
    item.status = status
    item.reviewed_by = actor.user_name
    item.reviewed_at = utcnow()
    item.review_note = note[:2000]


def _store_or_hold(
    node: Node,
    session: Session,
    item: QuarantineItem,
    ds: Dataset,
    data: bytes,
    findings: list[Finding],
    actor: Actor,
    note: str,
    action: str,
) -> Decision:
    """Index the cleaned instance, or keep it quarantined with the findings that remain."""
    audit = f"quarantine.{action}_and_store" if action == "rerun" else f"quarantine.{action}"
    sop, study = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)
    if findings:
        qstore = quarantine_store(node)
        _, rel = qstore.write(data)
        old, item.storage_path = item.storage_path, rel
        item.reasons = [f.as_dict() for f in findings]
        item.review_note = note[:2000]
        record(
            session,
            actor,
            audit,
            "quarantine_item",
            str(item.id),
            outcome="held",
            detail={"findings": len(findings)},
        )
        session.commit()
        _drop_unreferenced(node, session, [old])
        return Decision(item.id, "quarantined", sop, study, list(item.reasons))
    store = content_store(node)
    sha, rel = store.write(data)
    existing = find_instance(session, sop)
    if existing is not None and existing.sha256 != sha:
        raise Conflict(
            "An instance with this SOP Instance UID is already stored with different content."
        )
    if existing is None:
        ts = str(ds.file_meta.TransferSyntaxUID)
        inst = index_instance(
            session, item.facility_id, ds, StoredFile(sha, rel, len(data), ts), source=item.source
        )
        record_change(
            session, item.facility_id, "instance.stored", "instance", inst.sop_instance_uid
        )
    _decided(item, actor, note, "stored")
    original, item.original_path = item.original_path, None
    record(session, actor, audit, "quarantine_item", str(item.id), outcome="success")
    session.commit()
    _drop_unreferenced(node, session, [original])
    return Decision(item.id, "stored", sop, study)


def reject(node: Node, item_id: int, actor: Actor, note: str = "") -> Decision:
    """Discard the instance: both files go, the row and the audit trail stay."""
    with node.db.session() as session:
        item = _pending_item(session, item_id, actor)
        _decided(item, actor, note, "rejected")
        paths = [item.storage_path, item.original_path]
        item.original_path = None
        record(session, actor, "quarantine.reject", "quarantine_item", str(item.id))
        session.commit()
        _drop_unreferenced(node, session, paths)
        return Decision(item.id, "rejected", item.sop_instance_uid, item.study_uid)


def _drop_unreferenced(node: Node, session: Session, paths: list[str | None]) -> None:
    """Delete quarantine files no pending or stored item still refers to (the same content
    can be held twice when an instance is sent again)."""
    wanted = [p for p in paths if p]
    if not wanted:
        return
    used = set(
        session.scalars(
            select(QuarantineItem.storage_path).where(
                QuarantineItem.storage_path.in_(wanted),
                QuarantineItem.status.in_(("pending", "stored")),
            )
        )
    ) | set(
        session.scalars(
            select(QuarantineItem.original_path).where(
                QuarantineItem.original_path.in_(wanted),
                QuarantineItem.status == "pending",
            )
        )
    )
    qstore = quarantine_store(node)
    for path in wanted:
        if path not in used:
            qstore.delete(path)
