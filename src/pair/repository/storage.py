"""Content-addressed, crash-safe file storage: temp file, fsync, rename, fsync directory.

Single writes go through ``ContentStore.write``; a batch stages its files first and makes them
durable together with ``persist`` (the fsyncs of one batch run in parallel).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pair.core.config import Settings

_counter = itertools.count()
_stores: dict[tuple[str, str], ContentStore] = {}
_stores_lock = threading.Lock()


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(parent: str, root: str) -> tuple[str, ...]:
    """Create ``parent`` (below ``root``); returns the folders this call created."""
    created: list[str] = []
    path = parent
    while path != root and not os.path.isdir(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return tuple(reversed(created))


@dataclass(frozen=True)
class PendingWrite:
    """A staged file: its bytes are in ``tmp``; ``persist`` makes them durable at ``final``.

    An empty ``tmp`` means the content is already at ``final``; only its folder is synced.
    """

    tmp: str
    final: str
    new_dirs: tuple[str, ...] = ()


_sync_pool: ThreadPoolExecutor | None = None
_sync_pool_lock = threading.Lock()


def _fsync_all(paths: list[str]) -> None:
    """fsync several files at once: the file system can commit them together instead of one
    journal commit per file (docs/benchmarks.md, "Ingest with batched fsync")."""
    global _sync_pool
    if len(paths) == 1:
        _fsync_path(paths[0])
        return
    with _sync_pool_lock:
        if _sync_pool is None:
            _sync_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pair-fsync")
        pool = _sync_pool
    for _ in pool.map(_fsync_path, paths):
        pass


def persist(pending: Sequence[PendingWrite]) -> None:
    """Make staged files durable under their final names.

    The order keeps the store's promise: data on disk (fsync of every temp file), then the
    names (rename; fsync of each folder that got a file, and of the parents of new folders).
    On error every temp file not yet renamed is removed and the error propagates.
    """
    if not pending:
        return
    staged = [p for p in pending if p.tmp]
    renamed = 0
    try:
        if staged:
            _fsync_all([p.tmp for p in staged])
        for p in staged:
            try:
                os.replace(p.tmp, p.final)
            except FileNotFoundError:  # the folder was removed since it was created
                os.makedirs(os.path.dirname(p.final), exist_ok=True)
                os.replace(p.tmp, p.final)
            renamed += 1
    finally:
        for p in staged[renamed:]:
            Path(p.tmp).unlink(missing_ok=True)
    folders = {os.path.dirname(p.final) for p in pending}
    folders |= {os.path.dirname(d) for p in pending for d in p.new_dirs}
    _fsync_all(sorted(folders))


class ContentStore:
    """Files named by their SHA-256 under ``root/ab/cd/<sha>.dcm``.

    A file appears under its final name only once its bytes are on disk, so a crash leaves
    at most a stray temp file (removed by ``sweep_temp``) or an unindexed file (removed by the
    repository's start-up reconciliation), never a half-written instance.
    """

    @classmethod
    def at(cls, root: Path, tmp_dir: Path) -> ContentStore:
        """The process's store for ``root`` (created once: it remembers which folders exist)."""
        key = (str(root), str(tmp_dir))
        with _stores_lock:
            store = _stores.get(key)
            if store is None or not os.path.isdir(key[0]):
                store = _stores[key] = cls(root, tmp_dir)
            return store

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        self._root = str(root)
        self._tmp = str(tmp_dir)
        self._known_dirs: set[str] = set()
        root.mkdir(parents=True, exist_ok=True)
        tmp_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def relative_path(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.dcm"

    def path(self, relative: str) -> Path:
        return self.root / relative

    def write(self, data: bytes, sha256: str | None = None) -> tuple[str, str]:
        """Store bytes durably; returns (sha256, relative path). Idempotent."""
        sha256, rel, pending = self.stage(data, sha256)
        persist([pending])
        return sha256, rel

    def stage(self, data: bytes, sha256: str | None = None) -> tuple[str, str, PendingWrite]:
        """Write bytes to a temp file, not yet durable nor visible; ``persist`` finishes it.

        Returns (sha256, relative path, pending write). When the same content is already
        stored, the pending write only syncs its folder: another writer may have renamed it
        there without having synced the folder yet.
        """
        sha256 = sha256 or self.digest(data)
        rel = self.relative_path(sha256)
        final = os.path.join(self._root, rel)
        try:
            if os.stat(final).st_size == len(data):
                return sha256, rel, PendingWrite("", final)
        except FileNotFoundError:
            pass
        parent = os.path.dirname(final)
        new_dirs: tuple[str, ...] = ()
        if parent not in self._known_dirs:
            new_dirs = _make_dirs(parent, self._root)
            self._known_dirs.add(parent)
        # unique per process and thread (ingest workers, server threads); swept at start-up
        tmp = os.path.join(
            self._tmp, f"{os.getpid()}-{threading.get_ident()}-{next(_counter)}.part"
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha256, rel, PendingWrite(tmp, final, new_dirs)

    def read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def delete(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)

    def iter_relative(self, min_age_s: float = 0) -> list[str]:
        """Stored files; with ``min_age_s``, only those not modified for that long."""
        found = self.root.glob("??/??/*.dcm")
        return [str(p.relative_to(self.root)) for p in found if _old_enough(p, min_age_s)]

    def sweep_temp(self, min_age_s: float = 0) -> int:
        count = 0
        for p in self.tmp_dir.glob("*.part"):
            if _old_enough(p, min_age_s):
                p.unlink(missing_ok=True)
                count += 1
        return count


def _old_enough(path: Path, min_age_s: float) -> bool:
    """Another server process sharing the storage may be writing a young file right now."""
    if min_age_s <= 0:
        return True
    try:
        return time.time() - path.stat().st_mtime >= min_age_s
    except FileNotFoundError:  # gone meanwhile
        return False


@dataclass(frozen=True)
class Stores:
    """The repository's two stores, handed to ingest's stages (never looked up by them)."""

    content: ContentStore
    quarantine: ContentStore

    @classmethod
    def for_settings(cls, settings: Settings) -> Stores:
        return cls(
            ContentStore.at(settings.storage_dir, settings.tmp_dir),
            ContentStore.at(settings.quarantine_dir, settings.tmp_dir),
        )
