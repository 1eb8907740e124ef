"""Stage two of ingest around the database commit: retry what concurrency alone made fail,
and remove the files of a batch that is not committed.

Stage one (parse, de-identify, encode, fsync) is done once per batch. A deadlock or
serialization failure (SQLSTATE 40P01/40001), a lost unique-insert race (IntegrityError) or
SQLite's busy lock in stage two says nothing about the instances: the transaction is run again
with the files already on disk, a few times with a short random pause. A batch that still
fails, or fails for any other reason, removes the files it wrote that no row references, so a
failed batch leaves nothing behind until a restart's reconciliation.

Content-addressed files are shared: two batches carrying the same instance write the same
file. ``InFlight`` counts the batches of this process holding each file; a file is removed only
by its last holder and only when no committed row references it, and a batch that finds one of
its files gone before its commit (removed by a failing twin) prepares again.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from pair.repository.models import Instance, QuarantineItem
from pair.repository.storage import ContentStore

log = logging.getLogger("pair.ingest")

T = TypeVar("T")
SessionFactory = Callable[[], AbstractContextManager[Session]]

COMMIT_TRIES = 6
_RETRY_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure

# (store root, relative path) of a file, with what references it: the SOP Instance UID and
# whether it is a quarantine file
FileRef = tuple[ContentStore, str, str, bool]


def is_transient(exc: BaseException) -> bool:
    """A failure of the commit caused only by concurrent transactions."""
    if isinstance(exc, IntegrityError):
        return True  # a concurrent first insert of the same row won the race
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if code in _RETRY_SQLSTATES:
            return True
        return "database is locked" in str(orig)
    return False


def commit_with_retries(run: Callable[[int], T], what: str = "ingest commit") -> T:
    """``run(attempt)`` (one whole transaction) until it succeeds or fails for another reason."""
    for attempt in range(COMMIT_TRIES):
        try:
            return run(attempt)
        except DBAPIError as exc:
            if not is_transient(exc) or attempt == COMMIT_TRIES - 1:
                raise
            code = getattr(exc.orig, "sqlstate", None) or type(exc).__name__
            log.info("%s: concurrent transaction conflict (%s); retrying", what, code)
            time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
    raise AssertionError("unreachable")


class InFlight:
    """Files held by this process's batches between stage one and the end of stage two."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    @contextmanager
    def hold(self, files: Sequence[FileRef]) -> Iterator[bool]:
        """Hold ``files``; yields False when one of them is already gone (prepare again)."""
        paths = [str(store.path(rel)) for store, rel, _, _ in files]
        with self._lock:
            for p in paths:
                self._held[p] = self._held.get(p, 0) + 1
            present = all(os.path.exists(p) for p in paths)
        try:
            yield present
        finally:
            with self._lock:
                for p in paths:
                    left = self._held[p] - 1
                    if left:
                        self._held[p] = left
                    else:
                        del self._held[p]

    def remove_unreferenced(self, session_factory: SessionFactory, files: Sequence[FileRef]) -> int:
        """Delete those of ``files`` no other batch holds and no committed row references.

        Called by a holder (so a count of one is the caller itself). Errors are logged, not
        raised: what is left is removed by the next start-up's reconciliation.
        """
        if not files:
            return 0
        removed = 0
        try:
            with self._lock:
                candidates = [f for f in files if self._held.get(str(f[0].path(f[1])), 0) <= 1]
                if not candidates:
                    return 0
                referenced = _referenced(session_factory, candidates)
                for store, rel, _, _ in candidates:
                    if (str(store.root), rel) in referenced:
                        continue
                    store.delete(rel)
                    removed += 1
        except Exception as exc:  # never hide the batch's own error behind this one
            log.error("removing the files of a failed batch: %s", type(exc).__name__)
        return removed


def _referenced(session_factory: SessionFactory, files: Sequence[FileRef]) -> set[tuple[str, str]]:
    """(store root, relative path) of ``files`` that committed rows reference.

    Looked up by SOP Instance UID (indexed): a content-addressed file holds one instance.
    """
    plain = sorted({uid for _, _, uid, q in files if not q})
    held = sorted({uid for _, _, uid, q in files if q})
    with session_factory() as session:
        paths = (
            set(
                session.scalars(
                    select(Instance.storage_path).where(Instance.sop_instance_uid.in_(plain))
                )
            )
            if plain
            else set()
        )
        qpaths: set[str] = set()
        if held:
            for stored, original in session.execute(
                select(QuarantineItem.storage_path, QuarantineItem.original_path).where(
                    QuarantineItem.sop_instance_uid.in_(held),
                    QuarantineItem.status.in_(("pending", "stored")),
                )
            ):
                qpaths.update(p for p in (stored, original) if p)
    return {(str(store.root), rel) for store, rel, _, q in files if rel in (qpaths if q else paths)}
