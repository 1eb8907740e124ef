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

log = logging.getLogger("pair.fastpaths")

_enabled: bool | None = None


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
