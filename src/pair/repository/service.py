"""Repository services used by the CLI, the portal and the API (beyond DICOMweb)."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.audit.service import Actor
from pair.core.errors import BadRequest, Invalid
from pair.core.node import Node
from pair.repository.ingest import IngestResult, Outcome, Payload, ingest_batch
from pair.repository.models import ImportedFile, QuarantineItem
from pair.repository.sources import SourceItem, iter_sources, iter_zip_bytes

BATCH = 32


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
    """Bulk import; resumable: files already processed (same size and mtime) are skipped."""
    items = list(iter_sources(paths))
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
    for start in range(0, len(todo), BATCH):
        chunk = todo[start : start + BATCH]
        contents = [_read(it) for it in chunk]
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
        if progress:
            progress(summary.skipped + start + len(chunk), total)
    return summary


def _read(item: SourceItem) -> bytes | str:
    """The file's bytes, or why they cannot be read (missing, permission, damaged zip)."""
    try:
        return item.read()
    except OSError as exc:
        return f"Cannot read the file: {exc.strerror or exc}."
    except (zipfile.BadZipFile, zlib.error) as exc:
        return f"Cannot read the zip member: {exc}."


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


def ingest_uploads(
    node: Node, facility_id: int, files: Iterable[tuple[str, bytes]], actor: Actor
) -> list[tuple[str, IngestResult]]:
    """Portal/API upload: plain DICOM files and zip archives, each member reported."""
    labelled: list[tuple[str, bytes]] = []
    for name, data in files:
        if data[:4] == b"PK\x03\x04":
            labelled.extend(iter_zip_bytes(name, data))
        else:
            labelled.append((name, data))
    if not labelled:
        raise BadRequest("No files in the upload.")
    out: list[tuple[str, IngestResult]] = []
    for start in range(0, len(labelled), BATCH):
        chunk = labelled[start : start + BATCH]
        results = ingest_batch(
            node,
            facility_id,
            [Payload(data=d, label=n) for n, d in chunk],
            f"upload:{actor.user_name}",
            actor,
        )
        out.extend((n, r) for (n, _), r in zip(chunk, results, strict=True))
    return out


def list_quarantine(
    session: Session, facility_id: int, status: str = "pending"
) -> list[QuarantineItem]:
    stmt = select(QuarantineItem).where(QuarantineItem.facility_id == facility_id)
    if status != "all":
        stmt = stmt.where(QuarantineItem.status == status)
    return list(session.scalars(stmt.order_by(QuarantineItem.id.desc())))
