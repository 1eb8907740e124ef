"""Password policy: long enough, not a common password, not the user name.

The common-password list is a versioned data file (``data/common-passwords.txt``, its source and
licence in ``data/common-passwords.md``); the minimum length is ``PAIR_PASSWORD_MIN_LENGTH``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pair.core.errors import Invalid

COMMON_PASSWORDS = Path(__file__).parent / "data" / "common-passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    with COMMON_PASSWORDS.open(encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


def default_min_length() -> int:
    """The configured minimum (``PAIR_PASSWORD_MIN_LENGTH``), for callers without a node."""
    from pair.core.config import get_settings

    return get_settings().password_min_length


def check_password(password: str, user_name: str = "", min_length: int | None = None) -> None:
    """Raise ``Invalid`` with what is wrong and what is allowed; the password is never echoed."""
    minimum = min_length if min_length is not None else default_min_length()
    if len(password) < minimum:
        raise Invalid(f"Password must be at least {minimum} characters long.")
    if len(password) > 1024:
        raise Invalid("Password must be at most 1024 characters long.")
    if "\x00" in password:
        raise Invalid("Password must not contain NUL characters.")
    folded = password.strip().lower()
    if user_name and folded == user_name.strip().lower():
        raise Invalid("Password must not be the user name.")
    if folded in common_passwords():
        raise Invalid(
            "This password is on the list of commonly used passwords; choose another one "
            "(for example three or four unrelated words)."
        )
