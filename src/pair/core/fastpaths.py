"""The one switch for PAIR's fast paths (``PAIR_FAST_PATHS``) and their failure log.

Some hot paths re-implement what pydicom or highdicom does (the Part 10 encoder, the SR
document construction) because the library path dominated per-instance CPU. The library
path stays the reference: tests compare the two, the switch turns the fast paths off for a
node (``open_node`` sets it from the settings, so ingest worker processes follow it too),
and a fast path that raises falls back to the library path with one WARNING naming the path
and the exception type, never the values (they may be PHI).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("pair.fastpaths")

_enabled: bool | None = None
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: int | None = None


def configure(enabled: bool) -> None:
    """Set the switch for this process (``open_node`` does, from ``Settings.fast_paths``)."""
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    """Whether the fast paths are used; before ``configure``, from ``PAIR_FAST_PATHS``."""
    global _enabled
    if _enabled is None:
        from pair.core.config import Settings

        _enabled = Settings().fast_paths
    return _enabled


def fell_back(path: str, exc: BaseException) -> None:
    """Log a fast path's failure (the library path is used instead): name and type only."""
    log.warning("fast path %s failed (%s); using the library path", path, type(exc).__name__)


@contextmanager
def unvalidated_reading() -> Iterator[None]:
    """pydicom's read-time value validation off while ingest's stage one runs (fast paths on).

    In pydicom's default mode (WARN) that validation only warns, with the offending value in
    the message (it may be PHI), and it runs a regular expression for every value converted
    (every UID, date, name): about a tenth of stage one's CPU. What PAIR accepts is decided by
    its own checks (``pair.dicom.parse``, ``pair.dicom.wellformed``), which stay; the output is
    the same with and without (``tests/repository/test_ingest_fast_paths.py``). The setting is
    pydicom's, process-wide: concurrent stage ones share it (counted), and the mode in force
    before the first is restored after the last. A RAISE mode set by someone else is kept.
    """
    global _quiet_depth, _quiet_saved
    from pydicom import config

    if not enabled():
        yield
        return
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = config.settings.reading_validation_mode
        if _quiet_saved != config.RAISE:
            config.settings.reading_validation_mode = config.IGNORE
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                config.settings.reading_validation_mode = _quiet_saved
                _quiet_saved = None
