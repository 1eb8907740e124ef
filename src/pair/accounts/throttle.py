"""Sign-in throttling per account and per client address, persisted in ``login_throttle``.

After ``limit`` failures in a row, each further failure locks the key for
``base * 2^(failures - limit)`` seconds (at most ``max_s``). While locked, an attempt is refused
with 429 before the password is checked, so a lock gives no password oracle. Rows live in the
database, so every process of the node (and every ingest worker) sees the same counters; the
counters are updated with single UPDATE statements, so concurrent failures are all counted.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from sqlalchemy import and_, case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pair.accounts.models import LoginThrottle
from pair.audit.service import Actor, record
from pair.core.config import Settings
from pair.core.errors import TooManyRequests


@dataclass(frozen=True)
class Rules:
    max_failures: int = 5
    max_failures_per_address: int = 20
    base_s: float = 30.0
    max_s: float = 3600.0
    window_s: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            settings.login_max_failures,
            settings.login_max_failures_per_address,
            settings.login_lockout_base_s,
            settings.login_lockout_max_s,
            settings.login_failure_window_s,
        )

    def lock_s(self, failures: int, limit: int) -> float:
        if failures < limit:
            return 0.0
        return float(min(self.max_s, self.base_s * 2 ** min(failures - limit, 40)))


def _keys(rules: Rules, user_name: str, address: str) -> list[tuple[str, str, int]]:
    """(key, scope, limit): the account by a hash of its folded name (any attempted name, even
    one with NUL bytes, fits the column and no typed-in password lands in the table)."""
    folded = user_name.strip().lower().encode("utf-8", "replace")
    keys = [("user:" + hashlib.sha256(folded).hexdigest(), "account", rules.max_failures)]
    if address:
        keys.append(("addr:" + address[:80], "address", rules.max_failures_per_address))
    return keys


def check(session: Session, rules: Rules, user_name: str, address: str) -> None:
    """Raise ``TooManyRequests`` (with Retry-After seconds) while the account or address is
    locked."""
    now = time.time()
    keys = [k for k, _, _ in _keys(rules, user_name, address)]
    until = session.scalar(
        select(LoginThrottle.locked_until_s)
        .where(LoginThrottle.key.in_(keys))
        .order_by(LoginThrottle.locked_until_s.desc())
        .limit(1)
    )
    if until is not None and until > now:
        wait = math.ceil(until - now)
        raise TooManyRequests(
            f"Too many failed sign-ins; try again in {wait} seconds.", retry_after=wait
        )


def failure(session: Session, rules: Rules, user_name: str, address: str, actor: Actor) -> None:
    """Count one failed attempt; lock the key (and audit ``auth.lockout``) past its limit."""
    now = time.time()
    for key, scope, limit in _keys(rules, user_name, address):
        if session.get(LoginThrottle, key) is None:
            try:
                with session.begin_nested():
                    session.add(LoginThrottle(key=key, failures=0))
            except IntegrityError:  # another process created it first: count on that row
                pass
        cut = now - rules.window_s
        stale = and_(LoginThrottle.last_failure_s < cut, LoginThrottle.locked_until_s < cut)
        session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key)
            .values(
                failures=case((stale, 1), else_=LoginThrottle.failures + 1),
                last_failure_s=now,
            )
            .execution_options(synchronize_session=False)
        )
        failures = session.scalar(select(LoginThrottle.failures).where(LoginThrottle.key == key))
        lock = rules.lock_s(failures or 0, limit)
        if lock:
            session.execute(
                update(LoginThrottle)
                .where(LoginThrottle.key == key)
                .values(locked_until_s=now + lock)
                .execution_options(synchronize_session=False)
            )
            record(
                session,
                actor,
                "auth.lockout",
                "login",
                actor.user_name if scope == "account" else address,
                outcome="failure",
                detail={"scope": scope, "failures": failures, "locked_s": lock},
            )


def success(session: Session, rules: Rules, user_name: str) -> None:
    """A correct password clears the account's counter (not the address's: one valid account
    must not let an address try other accounts' passwords without limit)."""
    key = _keys(rules, user_name, "")[0][0]
    row = session.get(LoginThrottle, key)
    if row is not None:
        session.delete(row)
