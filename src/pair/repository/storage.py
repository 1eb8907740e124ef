"""Content-addressed, crash-safe file storage: temp file, fsync, rename, fsync directory."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from pathlib import Path

_counter = itertools.count()
_stores: dict[tuple[str, str], ContentStore] = {}
_stores_lock = threading.Lock()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        sha256 = sha256 or self.digest(data)
        rel = self.relative_path(sha256)
        final = os.path.join(self._root, rel)
        try:
            if os.stat(final).st_size == len(data):
                return sha256, rel
        except FileNotFoundError:
            pass
        parent = os.path.dirname(final)
        if parent not in self._known_dirs:
            os.makedirs(parent, exist_ok=True)
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
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # the folder was removed since we created it
                os.makedirs(parent, exist_ok=True)
                os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(Path(parent))
        return sha256, rel

    def read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def delete(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)

    def iter_relative(self) -> list[str]:
        return [str(p.relative_to(self.root)) for p in self.root.glob("??/??/*.dcm")]

    def sweep_temp(self) -> int:
        count = 0
        for p in self.tmp_dir.glob("*.part"):
            p.unlink(missing_ok=True)
            count += 1
        return count
