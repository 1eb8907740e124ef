"""One ingest pipeline behind every door (DIMSE C-STORE, STOW-RS, bulk import, portal upload).

parse -> validate -> de-identify -> residual-PHI scan -> write atomically (content-addressed)
-> index in one transaction -> acknowledge. Re-sending an instance is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.audit.service import Actor, record, record_change
from pair.core.errors import Conflict, NotFound, PairError
from pair.core.node import Node
from pair.db.base import utcnow
from pair.deid.service import deidentifier_for
from pair.dicom.parse import InvalidInstance, ParsedInstance, parse_bytes, to_part10_bytes
from pair.repository.index import StoredFile, find_instance, index_instance
from pair.repository.models import Instance, QuarantineItem
from pair.repository.storage import ContentStore

log = logging.getLogger("pair.ingest")


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"


@dataclass
class IngestResult:
    outcome: Outcome
    original_sop_instance_uid: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    reason: str = ""
    reason_code: str = ""
    quarantine_id: int | None = None
    burned_in_risk: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.outcome in (Outcome.STORED, Outcome.DUPLICATE)


@dataclass
class Payload:
    """One instance to ingest: raw Part 10 bytes or an already-decoded dataset."""

    data: bytes | None = None
    dataset: Dataset | None = None
    transfer_syntax_uid: str = ""
    label: str = ""


def content_store(node: Node) -> ContentStore:
    return ContentStore(node.settings.storage_dir, node.settings.tmp_dir)


def quarantine_store(node: Node) -> ContentStore:
    return ContentStore(node.settings.quarantine_dir, node.settings.tmp_dir)


def _finding_dict(finding: Any) -> dict[str, Any]:
    if hasattr(finding, "as_dict"):
        return dict(finding.as_dict())
    if hasattr(finding, "model_dump"):
        return dict(finding.model_dump(mode="json"))
    if hasattr(finding, "__dataclass_fields__"):
        from dataclasses import asdict

        return {k: str(v) for k, v in asdict(finding).items()}
    return {"message": str(finding)}


def _parse(payload: Payload, max_bytes: int) -> ParsedInstance:
    if payload.dataset is not None:
        from pair.dicom.parse import validate_dataset

        parsed = validate_dataset(payload.dataset)
        ts = payload.transfer_syntax_uid or parsed.transfer_syntax_uid
        return ParsedInstance(parsed.dataset, ts)
    data = payload.data or b""
    if len(data) > max_bytes:
        raise InvalidInstance(
            f"Instance of {len(data)} bytes exceeds the limit of {max_bytes} bytes.", "too_large"
        )
    return parse_bytes(data)


class Ingestor:
    """Ingests payloads for one facility inside one database transaction."""

    def __init__(
        self,
        node: Node,
        session: Session,
        facility: Facility,
        source: str,
        expected_study_uid: str | None = None,
    ) -> None:
        self.node = node
        self.expected_study_uid = expected_study_uid
        self.session = session
        self.facility = facility
        self.source = source
        self.store = content_store(node)
        self.quarantine = quarantine_store(node)
        self.deidentifier = deidentifier_for(session, node.settings, facility)

    def ingest(self, payload: Payload) -> IngestResult:
        try:
            parsed = _parse(payload, self.node.settings.max_instance_bytes)
        except InvalidInstance as exc:
            return IngestResult(Outcome.REJECTED, reason=exc.message, reason_code=exc.reason_code)
        ds = parsed.dataset
        original_uid = str(ds.SOPInstanceUID)
        sop_class = str(ds.SOPClassUID)
        if self.expected_study_uid and str(ds.StudyInstanceUID) != self.expected_study_uid:
            return IngestResult(
                Outcome.REJECTED,
                original_uid,
                sop_class,
                reason="StudyInstanceUID differs from the study in the URL.",
                reason_code="study_mismatch",
            )
        try:
            return self._ingest_parsed(parsed, original_uid, sop_class)
        except InvalidInstance as exc:
            return IngestResult(
                Outcome.REJECTED,
                original_uid,
                sop_class,
                reason=exc.message,
                reason_code=exc.reason_code,
            )
        except PairError as exc:
            return IngestResult(
                Outcome.REJECTED, original_uid, sop_class, reason=exc.message, reason_code=exc.code
            )
        except IntegrityError:
            raise
        except Exception as exc:
            log.exception("ingest failed (source %s)", self.source)
            return IngestResult(
                Outcome.REJECTED,
                original_uid,
                sop_class,
                reason=f"Processing failed: {type(exc).__name__}",
                reason_code="processing_failed",
            )

    def _ingest_parsed(
        self, parsed: ParsedInstance, original_uid: str, sop_class: str
    ) -> IngestResult:
        result = self.deidentifier.deidentify(parsed.dataset)
        deid = result.dataset
        data = to_part10_bytes(deid, parsed.transfer_syntax_uid)
        out = IngestResult(
            Outcome.STORED,
            original_uid,
            sop_class,
            str(deid.SOPInstanceUID),
            str(deid.StudyInstanceUID),
            str(deid.SeriesInstanceUID),
            burned_in_risk=list(result.burned_in_risk),
        )
        findings = [_finding_dict(f) for f in result.findings]
        if findings:
            return self._quarantine(deid, data, findings, out)
        existing = find_instance(self.session, out.sop_instance_uid)
        sha = self.store.digest(data)
        if existing is not None:
            if existing.sha256 == sha:
                out.outcome = Outcome.DUPLICATE
                return out
            raise Conflict(
                "An instance with this SOP Instance UID is already stored with different "
                "content; send it with a new SOP Instance UID.",
            )
        _, rel = self.store.write(data, sha)
        stored = StoredFile(sha, rel, len(data), parsed.transfer_syntax_uid)
        # An IntegrityError here means a concurrent writer won a race; the batch retries.
        index_instance(
            self.session,
            self.facility.id,
            deid,
            stored,
            source=self.source,
            burned_in_risk="; ".join(result.burned_in_risk),
        )
        record_change(
            self.session, self.facility.id, "instance.stored", "instance", out.sop_instance_uid
        )
        return out

    def _quarantine(
        self, deid: Dataset, data: bytes, findings: list[dict[str, Any]], out: IngestResult
    ) -> IngestResult:
        _, rel = self.quarantine.write(data)
        item = QuarantineItem(
            facility_id=self.facility.id,
            sop_instance_uid=out.sop_instance_uid,
            study_uid=out.study_uid,
            modality=str(deid.get("Modality", ""))[:16],
            storage_path=rel,
            reasons=findings,
            source=self.source[:128],
        )
        self.session.add(item)
        self.session.flush()
        out.outcome = Outcome.QUARANTINED
        out.quarantine_id = item.id
        out.reason = "Residual PHI found after de-identification; held for admin review."
        out.reason_code = "residual_phi"
        return out


def ingest_batch(
    node: Node,
    facility_id: int,
    payloads: Iterable[Payload],
    source: str,
    actor: Actor,
    *,
    expected_study_uid: str | None = None,
) -> list[IngestResult]:
    """Ingest several instances in one transaction; returns after the commit (acknowledged).

    ``expected_study_uid`` (STOW-RS to ``/studies/{study}``) rejects instances of other studies.
    """
    payload_list = list(payloads)
    for attempt in range(3):
        try:
            with node.db.session() as session:
                facility = session.get(Facility, facility_id)
                if facility is None:
                    raise NotFound(f"No facility with id {facility_id}.")
                ingestor = Ingestor(node, session, facility, source, expected_study_uid)
                results = [ingestor.ingest(p) for p in payload_list]
                _audit_batch(session, actor, results)
            return results
        except IntegrityError:
            if attempt == 2:
                raise
            log.info("concurrent insert detected; retrying batch")
    raise AssertionError("unreachable")


def _audit_batch(session: Session, actor: Actor, results: list[IngestResult]) -> None:
    counts: dict[str, int] = {}
    studies: set[str] = set()
    for r in results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
        if r.study_uid:
            studies.add(r.study_uid)
    record(
        session,
        actor,
        "instance.store",
        "study",
        ",".join(sorted(studies))[:128],
        detail={"outcomes": counts},
        outcome="success" if not counts.get("rejected") else "partial",
    )


def store_derived_instance(
    node: Node, facility_id: int, ds: Dataset, source: str, actor: Actor
) -> Instance:
    """Index an object PAIR generated from de-identified data (e.g. a report's SR)."""
    data = to_part10_bytes(
        ds,
        str(ds.file_meta.TransferSyntaxUID)
        if "TransferSyntaxUID" in getattr(ds, "file_meta", {})
        else "1.2.840.10008.1.2.1",
    )
    store = content_store(node)
    sha, rel = store.write(data)
    with node.db.session() as session:
        existing = find_instance(session, str(ds.SOPInstanceUID))
        if existing is not None:
            if existing.sha256 == sha:
                return existing
            raise Conflict("A different instance with this SOP Instance UID already exists.")
        inst = index_instance(
            session,
            facility_id,
            ds,
            StoredFile(sha, rel, len(data), str(ds.file_meta.TransferSyntaxUID)),
            source=source,
        )
        record_change(session, facility_id, "instance.stored", "instance", inst.sop_instance_uid)
        record(session, actor, "instance.store_derived", "instance", inst.sop_instance_uid)
        return inst


def release_quarantined(node: Node, item_id: int, actor: Actor, note: str = "") -> Instance:
    """Admin decision: the quarantined instance is safe; index it as shareable."""
    import io

    import pydicom

    qstore = quarantine_store(node)
    store = content_store(node)
    with node.db.session() as session:
        item = session.get(QuarantineItem, item_id)
        if item is None or item.status != "pending":
            raise NotFound(f"No pending quarantine item {item_id}.")
        if actor.role != "admin":
            from pair.core.errors import Forbidden

            raise Forbidden("Only admins can release quarantined instances.")
        data = qstore.read(item.storage_path)
        ds = pydicom.dcmread(io.BytesIO(data))
        sha, rel = store.write(data)
        inst = find_instance(session, str(ds.SOPInstanceUID))
        if inst is None:
            inst = index_instance(
                session,
                item.facility_id,
                ds,
                StoredFile(sha, rel, len(data), str(ds.file_meta.TransferSyntaxUID)),
                source=item.source,
            )
            record_change(
                session, item.facility_id, "instance.stored", "instance", inst.sop_instance_uid
            )
        item.status = "released"
        item.reviewed_by = actor.user_name
        item.reviewed_at = utcnow()
        item.review_note = note
        record(session, actor, "quarantine.release", "quarantine_item", str(item_id))
    qstore.delete(item.storage_path)
    return inst


def delete_quarantined(node: Node, item_id: int, actor: Actor, note: str = "") -> None:
    with node.db.session() as session:
        item = session.get(QuarantineItem, item_id)
        if item is None or item.status != "pending":
            raise NotFound(f"No pending quarantine item {item_id}.")
        if actor.role != "admin":
            from pair.core.errors import Forbidden

            raise Forbidden("Only admins can delete quarantined instances.")
        item.status = "deleted"
        item.reviewed_by = actor.user_name
        item.reviewed_at = utcnow()
        item.review_note = note
        record(session, actor, "quarantine.delete", "quarantine_item", str(item_id))
        path = item.storage_path
    quarantine_store(node).delete(path)


def reconcile(node: Node) -> dict[str, int]:
    """Start-up repair after a crash: drop temp files and files no row references."""
    store = content_store(node)
    swept = store.sweep_temp()
    with node.db.session() as session:
        known = set(session.scalars(select(Instance.storage_path)))
        known_q = set(
            session.scalars(
                select(QuarantineItem.storage_path).where(QuarantineItem.status == "pending")
            )
        )
    orphans = [rel for rel in store.iter_relative() if rel not in known]
    for rel in orphans:
        store.delete(rel)
    qstore = quarantine_store(node)
    q_orphans = [rel for rel in qstore.iter_relative() if rel not in known_q]
    for rel in q_orphans:
        qstore.delete(rel)
    if orphans or swept or q_orphans:
        log.info(
            "reconciled storage: %d orphan files, %d temp files removed",
            len(orphans) + len(q_orphans),
            swept,
        )
    return {"orphans": len(orphans) + len(q_orphans), "temp": swept}
