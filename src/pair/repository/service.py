"""Repository services used by the CLI, the portal and the API (beyond DICOMweb)."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.audit.service import Actor
from pair.core.config import Settings
from pair.core.errors import BadRequest, Invalid, LimitExceeded
from pair.core.node import Node
from pair.repository import quarantine
from pair.repository.inflation import InflationBudget, open_archive, read_member
from pair.repository.ingest import IngestResult, Outcome, Payload, ingest_batch
from pair.repository.models import ImportedFile, QuarantineItem
from pair.repository.sources import SourceItem, iter_sources

BATCH = 32
# a batch's payloads are held in memory together: at most this many bytes (or one instance)
BATCH_BYTES = 64 * 1024**2
_T = TypeVar("_T")


@dataclass
class ImportSummary:
    stored: int = 0
    duplicate: int = 0
    quarantined: int = 0
    rejected: int = 0
    skipped: int = 0
    rejections: list[tuple[str, str]] = field(default_factory=list)
    quarantines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, result: IngestResult) -> None:
        setattr(self, result.outcome.value, getattr(self, result.outcome.value) + 1)
        if result.outcome is Outcome.REJECTED:
            self.rejections.append((label, result.reason))
        elif result.outcome is Outcome.QUARANTINED:
            self.quarantines.append((label, result.reason))


def resolve_facility(session: Session, name: str | None) -> Facility:
    from pair.accounts import service as accounts

    if name:
        return accounts.get_facility(session, name)
    facilities = accounts.list_facilities(session)
    if len(facilities) != 1:
        raise Invalid("Several (or no) facilities exist: name one with --facility.")
    return facilities[0]


def import_paths(
    node: Node,
    facility_id: int,
    paths: list[Path],
    actor: Actor,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Bulk import; resumable: files already processed (same size and mtime) are skipped.

    Zips are checked against the inflation limits before anything is imported."""
    items = list(iter_sources(paths, InflationBudget.of(node.settings)))
    summary = ImportSummary()
    with node.db.session() as s:
        done = {
            (r.path, r.size, r.mtime_ns)
            for r in s.scalars(select(ImportedFile).where(ImportedFile.facility_id == facility_id))
        }
    todo = [it for it in items if (it.label, it.size, it.mtime_ns) not in done]
    summary.skipped = len(items) - len(todo)
    total = len(items)
    if progress:
        progress(summary.skipped, total)
    start = 0
    for chunk in _batches(todo, lambda it: it.size):
        contents = [_read(it, node.settings) for it in chunk]
        payloads = [
            Payload(data=data, label=it.label)
            for it, data in zip(chunk, contents, strict=True)
            if isinstance(data, bytes)
        ]
        batch = ingest_batch(node, facility_id, payloads, "import", actor) if payloads else []
        results = iter(batch)
        with node.db.session() as s:
            for it, data in zip(chunk, contents, strict=True):
                if isinstance(data, str):  # not remembered: read again on the next run
                    summary.add(it.label, IngestResult(Outcome.REJECTED, reason=data))
                    continue
                res = next(results)
                summary.add(it.label, res)
                _remember(s, facility_id, it, res)
        start += len(chunk)
        if progress:
            progress(summary.skipped + start, total)
    return summary


def _batches(items: list[_T], size: Callable[[_T], int]) -> Iterable[list[_T]]:
    """Consecutive batches of at most ``BATCH`` items and ``BATCH_BYTES`` (or one item)."""
    batch: list[_T] = []
    held = 0
    for item in items:
        if batch and (len(batch) == BATCH or held + size(item) > BATCH_BYTES):
            yield batch
            batch, held = [], 0
        batch.append(item)
        held += size(item)
    if batch:
        yield batch


def _read(item: SourceItem, settings: Settings) -> bytes | str:
    """The file's bytes, or why they cannot be read (missing, permission, damaged zip, a file
    past ``PAIR_MAX_INSTANCE_BYTES``, which is not read at all)."""
    limit = settings.max_instance_bytes
    if item.member is None and item.size > limit:
        return f"Instance of {item.size} bytes exceeds the limit of {limit} bytes."
    max_inflated = settings.max_inflated_instance_bytes
    try:
        return item.read(max_inflated)
    except OSError as exc:
        return f"Cannot read the file: {exc.strerror or exc}."
    except (zipfile.BadZipFile, zlib.error) as exc:
        return f"Cannot read the zip member: {exc}."
    except LimitExceeded as exc:
        return exc.message


def _remember(session: Session, facility_id: int, item: SourceItem, res: IngestResult) -> None:
    row = session.scalar(
        select(ImportedFile).where(
            ImportedFile.facility_id == facility_id, ImportedFile.path == item.label[:1024]
        )
    )
    if row is None:
        row = ImportedFile(facility_id=facility_id, path=item.label[:1024])
        session.add(row)
    row.size, row.mtime_ns = item.size, item.mtime_ns
    row.outcome, row.reason = res.outcome.value, res.reason


def ingest_upload_files(
    node: Node, facility_id: int, files: list[tuple[str, Path]], actor: Actor
) -> list[tuple[str, IngestResult]]:
    """Portal/API upload of files already streamed to disk: plain DICOM files and zips.

    Every zip is checked against the inflation limits before any instance is ingested (a bomb
    stores nothing); members are read one batch at a time, each with a running cap."""
    settings = node.settings
    budget = InflationBudget.of(settings)
    entries: list[tuple[str, Path, zipfile.ZipFile | None, zipfile.ZipInfo | None, int]] = []
    archives: list[zipfile.ZipFile] = []
    try:
        for name, path in files:
            with path.open("rb") as fh:
                magic = fh.read(4)
            if magic == b"PK\x03\x04":
                zf, members = open_archive(path, name, budget)
                archives.append(zf)
                entries.extend((f"{name}:{i.filename}", path, zf, i, i.file_size) for i in members)
            else:
                entries.append((name, path, None, None, path.stat().st_size))
        if not entries:
            raise BadRequest("No files in the upload.")
        out: list[tuple[str, IngestResult]] = []
        for chunk in _batches(entries, lambda e: e[4]):
            payloads = [_upload_payload(settings, *entry) for entry in chunk]
            readable = [p for p in payloads if isinstance(p, Payload)]
            results = iter(
                ingest_batch(node, facility_id, readable, f"upload:{actor.user_name}", actor)
                if readable
                else []
            )
            for entry, p in zip(chunk, payloads, strict=True):
                res = next(results) if isinstance(p, Payload) else p
                out.append((entry[0], res))
        return out
    finally:
        for zf in archives:
            zf.close()


def _upload_payload(
    settings: Settings,
    label: str,
    path: Path,
    zf: zipfile.ZipFile | None,
    info: zipfile.ZipInfo | None,
    size: int,
) -> Payload | IngestResult:
    """One upload entry's bytes, or the rejection that needs no reading."""
    if zf is None:
        if size > settings.max_instance_bytes:
            reason = f"Instance of {size} bytes exceeds the limit of {settings.max_instance_bytes}."
            return IngestResult(Outcome.REJECTED, reason=reason, reason_code="too_large")
        return Payload(data=path.read_bytes(), label=label)
    assert info is not None
    try:
        data = read_member(zf, info, label, settings.max_inflated_instance_bytes)
    except LimitExceeded as exc:
        return IngestResult(Outcome.REJECTED, reason=exc.message, reason_code=exc.code)
    except (zipfile.BadZipFile, zlib.error, OSError) as exc:
        reason = f"Cannot read the zip member: {exc}."
        return IngestResult(Outcome.REJECTED, reason=reason, reason_code="unreadable")
    return Payload(data=data, label=label)


def list_quarantine(
    session: Session,
    facility_id: int | None,
    status: str | None = "pending",
    limit: int | None = None,
    offset: int = 0,
) -> tuple[int, list[QuarantineItem]]:
    """One facility's quarantine queue, newest first: (total, one page); ``status`` None (or
    "all") is every status."""
    stmt = select(QuarantineItem).where(QuarantineItem.facility_id == facility_id)
    if status and status != "all":
        if status not in quarantine.STATUSES:
            allowed = ", ".join(("all", *quarantine.STATUSES))
            raise Invalid(f"Unknown status {status!r}; use one of {allowed}.")
        stmt = stmt.where(QuarantineItem.status == status)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(stmt.order_by(QuarantineItem.id.desc()).limit(limit).offset(offset))
    return total, list(items)
