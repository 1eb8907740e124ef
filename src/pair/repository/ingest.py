"""One ingest pipeline behind every door (DIMSE C-STORE, STOW-RS, bulk import, portal upload).

parse -> validate -> de-identify -> residual-PHI scan -> write atomically (content-addressed)
-> index in one transaction -> acknowledge. Re-sending an instance is idempotent.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, cast

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.audit.service import Actor, record, record_change, record_changes
from pair.core.config import Settings
from pair.core.errors import Conflict, LimitExceeded, NotFound, PairError
from pair.core.node import Node
from pair.db.values import column_text
from pair.deid.service import deidentifier_for
from pair.dicom import wellformed
from pair.dicom.deflate import inflated_size
from pair.dicom.parse import (
    InvalidInstance,
    ParsedInstance,
    check_identity_values,
    parse_bytes,
    to_part10_bytes,
)
from pair.repository.commit import FileRef, InFlight, commit_with_retries
from pair.repository.index import (
    IndexRecord,
    StoredFile,
    find_instance,
    index_instance,
    index_records,
    stored_digests,
)
from pair.repository.models import Instance, QuarantineItem
from pair.repository.storage import ContentStore, PendingWrite, persist

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
    """One instance to ingest: Part 10 bytes as received, and a label for messages."""

    data: bytes = b""
    label: str = ""
    # its size once inflated, when already measured within the limit (STOW-RS measures every
    # part before ingesting any); None: stage one measures it
    inflated: int | None = None


def content_store(node: Node) -> ContentStore:
    return ContentStore.at(node.settings.storage_dir, node.settings.tmp_dir)


def quarantine_store(node: Node) -> ContentStore:
    return ContentStore.at(node.settings.quarantine_dir, node.settings.tmp_dir)


def _finding_dict(finding: Any) -> dict[str, Any]:
    if hasattr(finding, "as_dict"):
        return dict(finding.as_dict())
    if hasattr(finding, "model_dump"):
        return dict(finding.model_dump(mode="json"))
    if hasattr(finding, "__dataclass_fields__"):
        from dataclasses import asdict

        return {k: str(v) for k, v in asdict(finding).items()}
    return {"message": str(finding)}


def _parse(payload: Payload, settings: Settings) -> ParsedInstance:
    data = payload.data
    max_bytes = settings.max_instance_bytes
    if len(data) > max_bytes:
        raise InvalidInstance(
            f"Instance of {len(data)} bytes exceeds the limit of {max_bytes} bytes.", "too_large"
        )
    if payload.inflated is None:  # a deflated data set is inflated by pydicom in one piece
        try:
            inflated_size(data, settings.max_inflated_instance_bytes)
        except LimitExceeded as exc:
            raise InvalidInstance(exc.message, exc.code) from None
    parsed = parse_bytes(data)
    wellformed.check(parsed.dataset, parsed.transfer_syntax_uid)
    check_identity_values(parsed.dataset)
    return parsed


@dataclass
class Prepared:
    """Stage one's answer for one payload: the result so far and what stage two must write.

    Plain values only (it crosses from an ingest worker process to the indexing thread).
    """

    result: IngestResult
    record: IndexRecord | None = None
    quarantine: dict[str, Any] | None = None


# ``pair serve`` attaches the repository's worker pool (``repository.workers``) to the node here
WORKERS_ATTACHMENT = "repository.ingest_workers"


class StageOnePool(Protocol):
    """Worker processes that run stage one (``IngestWorkers``; this module may not import it)."""

    def prepare(
        self,
        facility_id: int,
        source: str,
        expected_study_uid: str | None,
        payloads: list[Payload],
    ) -> list[Prepared]: ...

    def close(self) -> None: ...


class Preparer:
    """Stage one: parse, validate, de-identify, encode and store the file durably.

    The CPU-heavy part of ingest. The de-identification mapping store lives in ``session``
    (the batch's own transaction in-process, the worker's transaction in an ingest worker).
    Files are staged per instance and made durable together by ``finish`` (``prepare_all``
    does both), before stage two indexes them.
    """

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
        self.facility = facility
        self.source = source
        self.store = content_store(node)
        self.quarantine = quarantine_store(node)
        self.session = session
        self.deidentifier = deidentifier_for(session, node.settings, facility)
        self._pending: list[tuple[Prepared, PendingWrite]] = []

    def prepare_all(self, payloads: Iterable[Payload]) -> list[Prepared]:
        try:
            prepared = [self.prepare(p) for p in payloads]
        except BaseException:
            self.discard()
            raise
        self.finish()
        return prepared

    def discard(self) -> None:
        """Remove the staged temp files of a batch that will not be finished."""
        pending, self._pending = self._pending, []
        for _, write in pending:
            if write.tmp:
                Path(write.tmp).unlink(missing_ok=True)

    def finish(self) -> None:
        """Make the staged files durable, all at once; if that fails, reject their instances."""
        pending, self._pending = self._pending, []
        try:
            persist([write for _, write in pending])
        except OSError as exc:
            log.error("storing %d files failed: %s", len(pending), type(exc).__name__)
            reason = f"Processing failed: the file could not be stored ({exc.strerror or exc})."
            for prepared, _ in pending:
                r = prepared.result
                prepared.result = _rejected(
                    r.original_sop_instance_uid, r.sop_class_uid, reason, "processing_failed"
                ).result
                prepared.record = prepared.quarantine = None

    def prepare(self, payload: Payload) -> Prepared:
        """Stage one for one instance; its file is staged, durable only after ``finish``."""
        try:
            parsed = _parse(payload, self.node.settings)
        except InvalidInstance as exc:
            return _rejected("", "", exc.message, exc.reason_code)
        ds = parsed.dataset
        original_uid = str(ds.SOPInstanceUID)
        sop_class = str(ds.SOPClassUID)
        if self.expected_study_uid and str(ds.StudyInstanceUID) != self.expected_study_uid:
            return _rejected(
                original_uid,
                sop_class,
                "StudyInstanceUID differs from the study in the URL.",
                "study_mismatch",
            )
        try:
            return self._prepare_parsed(parsed, original_uid, sop_class, payload.data)
        except InvalidInstance as exc:
            return _rejected(original_uid, sop_class, exc.message, exc.reason_code)
        except PairError as exc:
            return _rejected(original_uid, sop_class, exc.message, exc.code)
        except IntegrityError:
            raise
        except Exception as exc:
            log.exception("ingest failed (source %s)", self.source)
            self.session.rollback()  # this instance's mapping writes, if any (a failed statement)
            return _rejected(
                original_uid,
                sop_class,
                f"Processing failed: {type(exc).__name__}",
                "processing_failed",
            )

    def _prepare_parsed(
        self, parsed: ParsedInstance, original_uid: str, sop_class: str, received: bytes
    ) -> Prepared:
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
        store = self.quarantine if findings else self.store
        sha = store.digest(data)
        rel = store.relative_path(sha)
        writes: list[tuple[bytes, str]] = []
        if findings:
            # the instance as received, for review (re-run de-identification, re-scan)
            received_sha = store.digest(received)
            writes.append((received, received_sha))
            quarantine = {
                "facility_id": self.facility.id,
                "sop_instance_uid": out.sop_instance_uid,
                "study_uid": out.study_uid,
                "modality": column_text(deid.get("Modality", ""), 16),
                "storage_path": rel,
                "original_path": store.relative_path(received_sha),
                "reasons": findings,
                "source": column_text(self.source, 128),
            }
            prepared = Prepared(out, quarantine=quarantine)
        else:
            stored = StoredFile(sha, rel, len(data), parsed.transfer_syntax_uid)
            record = IndexRecord.from_dataset(
                deid, stored, source=self.source, burned_in_risk="; ".join(result.burned_in_risk)
            )
            prepared = Prepared(out, record=record)
        # the instance's new mappings are committed now: stage one holds no lock (the pseudonym
        # counter, a new study's key) across the batch, so concurrent batches cannot deadlock
        self.session.commit()
        writes.append((data, sha))
        for content, digest in writes:  # last: nothing after it can fail
            _, _, write = store.stage(content, digest)
            self._pending.append((prepared, write))
        return prepared


def _rejected(original_uid: str, sop_class: str, reason: str, code: str) -> Prepared:
    return Prepared(
        IngestResult(Outcome.REJECTED, original_uid, sop_class, reason=reason, reason_code=code)
    )


_CONFLICT = (
    "An instance with this SOP Instance UID is already stored with different content; "
    "send it with a new SOP Instance UID."
)


def commit_prepared(session: Session, facility_id: int, prepared: list[Prepared]) -> list[str]:
    """Stage two, inside the batch's transaction: quarantine rows, duplicate/conflict checks,
    index rows and change events. Returns the storage paths of files no row will reference
    (conflicts), to delete after the commit."""
    for p in prepared:
        if p.quarantine is not None:
            item = QuarantineItem(**p.quarantine)
            session.add(item)
            session.flush()
            p.result.outcome = Outcome.QUARANTINED
            p.result.quarantine_id = item.id
            p.result.reason = "Residual PHI found after de-identification; held for admin review."
            p.result.reason_code = "residual_phi"
    with_records = [p for p in prepared if p.record is not None]
    stored = stored_digests(session, [p.result.sop_instance_uid for p in with_records])
    new: list[IndexRecord] = []
    unreferenced: list[str] = []
    for p in with_records:
        record = p.record
        assert record is not None
        known = stored.get(record.sop_instance_uid)
        if known == record.sha256:
            p.result.outcome = Outcome.DUPLICATE
        elif known is not None:
            p.result.outcome = Outcome.REJECTED
            p.result.reason = _CONFLICT
            p.result.reason_code = Conflict.code
            if record.sha256 not in stored.values():
                unreferenced.append(record.instance["storage_path"])
        else:
            stored[record.sop_instance_uid] = record.sha256
            new.append(record)
    # An IntegrityError here means a concurrent writer won a race; the batch retries.
    index_records(session, facility_id, new)
    record_changes(
        session, facility_id, "instance.stored", "instance", [r.sop_instance_uid for r in new]
    )
    return unreferenced


_in_flight = InFlight()
_PREPARE_TRIES = 3


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
    Stage one runs once; stage two (the index transaction) is retried on conflicts with
    concurrent batches (``pair.repository.commit``). A batch that fails leaves no file behind.
    """
    payload_list = list(payloads)
    for attempt in range(_PREPARE_TRIES):
        try:
            prepared = _stage_one(node, facility_id, payload_list, source, expected_study_uid)
        except IntegrityError:  # a mapping-store race the store did not absorb
            if attempt == _PREPARE_TRIES - 1:
                raise
            continue
        files = _files(node, prepared)
        with _in_flight.hold(files) as present:
            if not present:  # removed by a failing batch with the same content: never index it
                log.info("a file of the batch was removed by a failing batch; preparing again")
                if attempt < _PREPARE_TRIES - 1:
                    continue
                _in_flight.remove_unreferenced(node.db.session, files)
                reason = "Processing failed: a concurrent request interfered; send it again."
                return [
                    _rejected(
                        p.result.original_sop_instance_uid,
                        p.result.sop_class_uid,
                        reason,
                        "processing_failed",
                    ).result
                    for p in prepared
                ]
            try:
                results, unreferenced = commit_with_retries(
                    functools.partial(_stage_two, node, facility_id, prepared, actor)
                )
            except BaseException:
                _in_flight.remove_unreferenced(node.db.session, files)
                raise
            if unreferenced:  # conflicts: their files are referenced by no row
                _in_flight.remove_unreferenced(
                    node.db.session, [f for f in files if f[1] in unreferenced]
                )
            return results
    raise AssertionError("unreachable")


def _stage_one(
    node: Node,
    facility_id: int,
    payloads: list[Payload],
    source: str,
    expected_study_uid: str | None,
) -> list[Prepared]:
    """Parse, de-identify and store durably: in the node's worker processes, or here."""
    from concurrent.futures.process import BrokenProcessPool

    workers = cast("StageOnePool | None", node.attachments.get(WORKERS_ATTACHMENT))
    if workers is not None:
        try:
            return workers.prepare(facility_id, source, expected_study_uid, payloads)
        except BrokenProcessPool:
            reason = "Processing failed: the ingest worker stopped (out of memory?); send it again."
            return [_rejected("", "", reason, "processing_failed") for _ in payloads]
    with node.db.session() as session:
        facility = session.get(Facility, facility_id)
        if facility is None:
            raise NotFound(f"No facility with id {facility_id}.")
        return Preparer(node, session, facility, source, expected_study_uid).prepare_all(payloads)


def _files(node: Node, prepared: list[Prepared]) -> list[FileRef]:
    """The files stage one wrote (or found) for the batch, with the instance each holds."""
    files: list[FileRef] = []
    for p in prepared:
        if p.record is not None:
            rel, uid = p.record.instance["storage_path"], p.record.sop_instance_uid
            files.append((content_store(node), rel, uid, False))
        elif p.quarantine is not None:
            uid = p.quarantine["sop_instance_uid"]
            for key in ("storage_path", "original_path"):  # held, and as received
                if p.quarantine.get(key):
                    files.append((quarantine_store(node), p.quarantine[key], uid, True))
    return files


def _stage_two(
    node: Node, facility_id: int, prepared: list[Prepared], actor: Actor, attempt_no: int
) -> tuple[list[IngestResult], list[str]]:
    """One attempt of the index transaction, from stage one's results as they came."""
    attempt = [Prepared(copy.copy(p.result), p.record, p.quarantine) for p in prepared]
    with node.db.session() as session:
        unreferenced = commit_prepared(session, facility_id, attempt)
        results = [p.result for p in attempt]
        _audit_batch(session, actor, results)
    return results, unreferenced


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


def reconcile(node: Node) -> dict[str, int]:
    """Start-up repair after a crash: drop temp files and files no row references."""
    store = content_store(node)
    swept = store.sweep_temp()
    with node.db.session() as session:
        known = set(session.scalars(select(Instance.storage_path)))
        known_q: set[str] = set()
        for held, original, status in session.execute(
            select(
                QuarantineItem.storage_path, QuarantineItem.original_path, QuarantineItem.status
            ).where(QuarantineItem.status.in_(("pending", "stored")))
        ):
            known_q.add(held)  # a stored item's held file stays, for audit
            if original and status == "pending":
                known_q.add(original)
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
