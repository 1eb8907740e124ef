"""Values every supported database stores alike.

PostgreSQL refuses a NUL byte in text and a string longer than its ``VARCHAR(n)`` column, and
an integer outside the column's range; SQLite stores all three. Index and audit values go
through these helpers so that the same input gives the same row on both.
"""

from __future__ import annotations

from typing import Any

INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1


def column_text(value: Any, limit: int) -> str:
    """``value`` as text for a ``VARCHAR(limit)`` column: NUL bytes dropped, cut to ``limit``."""
    text = "" if value is None else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text[:limit]


def column_int(value: Any) -> int | None:
    """``value`` as an ``INTEGER`` column value, or None when it is not an int4 number."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if INT4_MIN <= number <= INT4_MAX else None


def joined_values(values: list[str], limit: int, sep: str = "\\") -> str:
    """Whole values joined by ``sep``, as many as fit in ``limit`` characters (a multi-valued
    attribute such as ModalitiesInStudy is never cut in the middle of a value)."""
    out = ""
    for value in values:
        candidate = f"{out}{sep}{value}" if out else value
        if len(candidate) > limit:
            break
        out = candidate
    return out
