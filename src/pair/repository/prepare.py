"""Stage one of ingest, per instance: parse, validate, de-identify, residual-PHI scan, encode,
and stage the file in its store.

Stage one decides every outcome that needs no index: rejected (unreadable, too large, not
servable, another study than the URL's), quarantined (residual PHI found) or to be stored.
What only the index can tell (duplicate, conflict) is stage two's (``repository.ingest``).
The same function, ``prepare_batch``, runs in the serving process and in an ingest worker
process (``repository.workers``); the stores are handed in, never looked up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.core import fastpaths
from pair.core.config import Settings
from pair.core.errors import LimitExceeded, NotFound, PairError
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
from pair.repository.index import IndexRecord, StoredFile
from pair.repository.outcomes import IngestResult, Outcome, Payload
from pair.repository.storage import PendingWrite, Stores, persist

log = logging.getLogger("pair.ingest")

RESIDUAL_PHI = "Residual PHI found after de-identification; held for admin review."

# ``pair serve`` attaches the repository's worker pool (``repository.workers``) to the node here
WORKERS_ATTACHMENT = "repository.ingest_workers"


@dataclass
class Prepared:
    """Stage one's answer for one payload: the result so far and what stage two must write.

    Plain values only (it crosses from an ingest worker process to the indexing thread).
    """

    result: IngestResult
    record: IndexRecord | None = None
    quarantine: dict[str, Any] | None = None


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


def _finding_dict(finding: Any) -> dict[str, Any]:
    if hasattr(finding, "as_dict"):
        return dict(finding.as_dict())
    if hasattr(finding, "model_dump"):
        return dict(finding.model_dump(mode="json"))
    if hasattr(finding, "__dataclass_fields__"):
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


def rejected(original_uid: str, sop_class: str, reason: str, code: str) -> Prepared:
    return Prepared(
        IngestResult(Outcome.REJECTED, original_uid, sop_class, reason=reason, reason_code=code)
    )


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
        stores: Stores,
        expected_study_uid: str | None = None,
    ) -> None:
        self.node = node
        self.expected_study_uid = expected_study_uid
        self.facility = facility
        self.source = source
        self.store = stores.content
        self.quarantine = stores.quarantine
        self.session = session
        self.deidentifier = deidentifier_for(session, node.settings, facility)
        self._pending: list[tuple[Prepared, PendingWrite]] = []

    def prepare_all(self, payloads: Iterable[Payload]) -> list[Prepared]:
        try:
            with fastpaths.unvalidated_reading():
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
                prepared.result = rejected(
                    r.original_sop_instance_uid, r.sop_class_uid, reason, "processing_failed"
                ).result
                prepared.record = prepared.quarantine = None

    def prepare(self, payload: Payload) -> Prepared:
        """Stage one for one instance; its file is staged, durable only after ``finish``."""
        try:
            parsed = _parse(payload, self.node.settings)
        except InvalidInstance as exc:
            return rejected("", "", exc.message, exc.reason_code)
        ds = parsed.dataset
        original_uid = str(ds.SOPInstanceUID)
        sop_class = str(ds.SOPClassUID)
        if self.expected_study_uid and str(ds.StudyInstanceUID) != self.expected_study_uid:
            return rejected(
                original_uid,
                sop_class,
                "StudyInstanceUID differs from the study in the URL.",
                "study_mismatch",
            )
        try:
            return self._prepare_parsed(parsed, original_uid, sop_class, payload.data)
        except InvalidInstance as exc:
            return rejected(original_uid, sop_class, exc.message, exc.reason_code)
        except PairError as exc:
            return rejected(original_uid, sop_class, exc.message, exc.code)
        except IntegrityError:
            raise
        except Exception as exc:
            log.exception("ingest failed (source %s)", self.source)
            self.session.rollback()  # this instance's mapping writes, if any (a failed statement)
            return rejected(
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
        if findings:  # decided here, once: stage two only records the quarantine row
            out.outcome, out.reason, out.reason_code = (
                Outcome.QUARANTINED,
                RESIDUAL_PHI,
                "residual_phi",
            )
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
                deid, stored, source=self.source, burned_in_risk="; ".join(result.review_reasons)
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


def prepare_batch(
    node: Node,
    stores: Stores,
    facility_id: int,
    source: str,
    expected_study_uid: str | None,
    payloads: Iterable[Payload],
) -> list[Prepared]:
    """Stage one for a batch in this process, with its own session: the serving process
    without workers, and each ingest worker (``workers.prepare_chunk``), run exactly this."""
    with node.db.session() as session:
        facility = session.get(Facility, facility_id)
        if facility is None:
            raise NotFound(f"No facility with id {facility_id}.")
        preparer = Preparer(node, session, facility, source, stores, expected_study_uid)
        return preparer.prepare_all(payloads)


def stage_one(
    node: Node,
    stores: Stores,
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
            return [rejected("", "", reason, "processing_failed") for _ in payloads]
    return prepare_batch(node, stores, facility_id, source, expected_study_uid, payloads)
