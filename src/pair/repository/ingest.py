"""One ingest pipeline behind every door (DIMSE C-STORE, STOW-RS, bulk import, portal upload).

parse -> validate -> de-identify -> residual-PHI scan -> write atomically (content-addressed)
-> index in one transaction -> acknowledge. Re-sending an instance is idempotent.

Stage one, per instance (``repository.prepare``), runs once per batch and decides every outcome
the index is not needed for; stage two, per batch (here), is the index transaction, retried
alone on conflicts with concurrent batches (``repository.commit``).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pair.audit.feedlog import record_stored
from pair.audit.service import Actor, record, record_change, record_changes
from pair.core.errors import Conflict
from pair.core.node import Node
from pair.dicom.parse import to_part10_bytes
from pair.repository.commit import FileRef, InFlight, commit_with_retries
from pair.repository.groupcommit import GroupCommitter
from pair.repository.index import (
    IndexRecord,
    StoredFile,
    find_instance,
    index_instance,
    index_records,
    stored_digests,
)
from pair.repository.models import Instance, QuarantineItem, Study
from pair.repository.outcomes import IngestResult, Outcome, Payload
from pair.repository.prepare import (
    WORKERS_ATTACHMENT,
    Prepared,
    Preparer,
    StageOnePool,
    rejected,
    stage_one,
)
from pair.repository.storage import ContentStore, Stores

__all__ = [
    "WORKERS_ATTACHMENT",
    "IngestCommitter",
    "IngestResult",
    "Member",
    "Outcome",
    "Payload",
    "Prepared",
    "Preparer",
    "StageOnePool",
    "commit_prepared",
    "commit_prepared_many",
    "content_store",
    "group_committer",
    "ingest_batch",
    "quarantine_store",
    "reconcile",
    "store_derived_instance",
]

log = logging.getLogger("pair.ingest")


def content_store(node: Node) -> ContentStore:
    return Stores.for_settings(node.settings).content


def quarantine_store(node: Node) -> ContentStore:
    return Stores.for_settings(node.settings).quarantine


_CONFLICT = (
    "An instance with this SOP Instance UID is already stored with different content; "
    "send it with a new SOP Instance UID."
)


def commit_prepared(session: Session, facility_id: int, prepared: list[Prepared]) -> list[str]:
    """Stage two of one facility's batch, inside the caller's transaction (see
    ``commit_prepared_many``). Returns the storage paths of files no row will reference
    (conflicts), to delete after the commit."""
    return commit_prepared_many(session, [(facility_id, prepared)])


def commit_prepared_many(
    session: Session, parts: Sequence[tuple[int, list[Prepared]]]
) -> list[str]:
    """Stage two, inside the transaction, for the instances of one or more facilities:
    quarantine rows (the outcome was decided in stage one), duplicate/conflict checks, index
    rows and change events, facility by facility in id order (with ``index_records``' order
    within one, every transaction takes its row locks in one global order); then the change
    feed of each facility, last (it orders the commit, and its quota check may refuse it).
    Returns the storage paths of files no row will reference (conflicts)."""
    unreferenced: list[str] = []
    stored: list[tuple[int, list[IndexRecord]]] = []
    for facility_id, prepared in sorted(parts, key=lambda part: part[0]):
        stored.append((facility_id, _index_prepared(session, facility_id, prepared, unreferenced)))
    for facility_id, new in stored:
        record_stored(
            session, facility_id, [(r.study["study_uid"], r.instance["size"]) for r in new]
        )
    return unreferenced


def _index_prepared(
    session: Session, facility_id: int, prepared: list[Prepared], unreferenced: list[str]
) -> list[IndexRecord]:
    """One facility's rows; returns the records newly indexed, adds conflicts' files to
    ``unreferenced``."""
    for p in prepared:
        if p.quarantine is not None:
            item = QuarantineItem(**p.quarantine)
            session.add(item)
            session.flush()
            p.result.quarantine_id = item.id
    with_records = [p for p in prepared if p.record is not None]
    stored = stored_digests(session, [p.result.sop_instance_uid for p in with_records])
    new: list[IndexRecord] = []
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
    return new


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
    stores: Stores | None = None,
    shareable: bool = True,
    committer: IngestCommitter | None = None,
) -> list[IngestResult]:
    """Ingest several instances in one transaction; returns after the commit (acknowledged).

    ``expected_study_uid`` (STOW-RS to ``/studies/{study}``) rejects instances of other studies.
    Stage one runs once, and again only when a concurrent batch undid it (a de-identification
    mapping insert lost a race, or a failing twin removed a shared file before this batch held
    it); stage two (the index transaction) alone is retried on conflicts with concurrent
    batches (``pair.repository.commit``). A batch that fails leaves no file behind.
    ``stores``: where files go (the node's stores by default). ``shareable=False`` (a case
    pulled from the hub) marks the batch's studies not shareable in the same transaction, so
    no committed state lets the outbox send it back. ``committer``: stage two joins concurrent
    callers' batches in one transaction (``group_committer``; the DICOM listener's C-STORE).
    """
    stores = stores or Stores.for_settings(node.settings)
    payload_list = list(payloads)
    for attempt in range(_PREPARE_TRIES):
        try:
            prepared = stage_one(
                node, stores, facility_id, payload_list, source, expected_study_uid
            )
        except IntegrityError:  # a mapping-store race the store did not absorb
            if attempt == _PREPARE_TRIES - 1:
                raise
            continue
        files = _files(stores, prepared)
        with _in_flight.hold(files) as present:
            if not present:  # removed by a failing batch with the same content: never index it
                log.info("a file of the batch was removed by a failing batch; preparing again")
                if attempt < _PREPARE_TRIES - 1:
                    continue
                _in_flight.remove_unreferenced(node.db.session, files)
                reason = "Processing failed: a concurrent request interfered; send it again."
                return [
                    rejected(
                        p.result.original_sop_instance_uid,
                        p.result.sop_class_uid,
                        reason,
                        "processing_failed",
                    ).result
                    for p in prepared
                ]
            member = Member(facility_id, actor, prepared, shareable)
            try:
                if committer is not None:  # with concurrent callers' batches
                    results, unreferenced = committer.submit(member)
                else:
                    ((results, unreferenced),) = _commit_members(node, [member])
            except BaseException:
                _in_flight.remove_unreferenced(node.db.session, files)
                raise
            if unreferenced:  # conflicts: their files are referenced by no row
                _in_flight.remove_unreferenced(
                    node.db.session, [f for f in files if f[1] in unreferenced]
                )
            return results
    raise AssertionError("unreachable")


def _files(stores: Stores, prepared: list[Prepared]) -> list[FileRef]:
    """The files stage one wrote (or found) for the batch, with the instance each holds."""
    files: list[FileRef] = []
    for p in prepared:
        if p.record is not None:
            rel, uid = p.record.instance["storage_path"], p.record.sop_instance_uid
            files.append((stores.content, rel, uid, False))
        elif p.quarantine is not None:
            uid = p.quarantine["sop_instance_uid"]
            for key in ("storage_path", "original_path"):  # held, and as received
                if p.quarantine.get(key):
                    files.append((stores.quarantine, p.quarantine[key], uid, True))
    return files


@dataclass(frozen=True)
class Member:
    """One caller's batch in stage two: its facility, actor and stage one's results."""

    facility_id: int
    actor: Actor
    prepared: list[Prepared]
    shareable: bool = True


# per member: its results and the storage paths of its files no row references (conflicts)
Committed = tuple[list[IngestResult], list[str]]
IngestCommitter = GroupCommitter[Member, Committed]


def group_committer(node: Node) -> IngestCommitter:
    """Stage two for concurrent ``ingest_batch`` callers, several batches per transaction."""
    return GroupCommitter(functools.partial(_commit_members, node))


def _commit_members(node: Node, members: list[Member]) -> list[Committed]:
    """The index transaction of one or more batches, retried on concurrency conflicts."""
    return commit_with_retries(functools.partial(_stage_two, node, members))


def _stage_two(node: Node, members: list[Member], attempt_no: int) -> list[Committed]:
    """One attempt of the index transaction, from stage one's results as they came: the
    instances of each facility together (``commit_prepared_many``), then per member its
    studies' shareable flag and its actor's audit row."""
    attempts = [
        [Prepared(copy.copy(p.result), p.record, p.quarantine) for p in m.prepared] for m in members
    ]
    by_facility: dict[int, list[Prepared]] = {}
    for m, attempt in zip(members, attempts, strict=True):
        by_facility.setdefault(m.facility_id, []).extend(attempt)
    out: list[Committed] = []
    with node.db.session() as session:
        unreferenced = set(commit_prepared_many(session, list(by_facility.items())))
        for m, attempt in zip(members, attempts, strict=True):
            results = [p.result for p in attempt]
            studies = sorted({r.study_uid for r in results if r.accepted and r.study_uid})
            if not m.shareable and studies:
                session.execute(
                    update(Study)
                    .where(Study.facility_id == m.facility_id, Study.study_uid.in_(studies))
                    .values(shareable=False)
                )
            _audit_batch(session, m.actor, results)
            paths = {p.record.instance["storage_path"] for p in attempt if p.record is not None}
            out.append((results, sorted(paths & unreferenced)))
    return out


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
    """Start-up repair after a crash: drop temp files and files no row references. With
    several server processes on one storage, files younger than PAIR_RECONCILE_MIN_AGE_S are
    kept: another process may be ingesting them (written, rows not yet committed)."""
    min_age = node.settings.reconcile_min_age_s
    store = content_store(node)
    swept = store.sweep_temp(min_age)
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
    orphans = [rel for rel in store.iter_relative(min_age) if rel not in known]
    for rel in orphans:
        store.delete(rel)
    qstore = quarantine_store(node)
    q_orphans = [rel for rel in qstore.iter_relative(min_age) if rel not in known_q]
    for rel in q_orphans:
        qstore.delete(rel)
    if orphans or swept or q_orphans:
        log.info(
            "reconciled storage: %d orphan files, %d temp files removed",
            len(orphans) + len(q_orphans),
            swept,
        )
    return {"orphans": len(orphans) + len(q_orphans), "temp": swept}
