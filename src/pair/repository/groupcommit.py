"""Group commit: concurrent callers' stage two in one transaction (leader/follower).

A C-STORE is a batch of one instance, and a batch's index transaction costs about the same
for one instance as for ten (docs/benchmarks.md, "Ingest issue 17"). pynetdicom runs each
association in its own thread: each prepares its instance (stage one) alone, then hands it to
the committer. The first caller to find no transaction running leads: it commits everything
queued in one transaction. Callers arriving meanwhile queue; when the leader is done one of
them leads the next group. No one waits for a timer, so a lone sender is not slowed down.

Every caller returns only after the transaction holding its member committed (an answer sent
earlier could be lost by a kill -9). If a group's transaction fails, each member is committed
alone, so a failure (a facility's quota, a bad row) belongs only to the member that causes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("pair.ingest")

M = TypeVar("M")
R = TypeVar("R")


class _Slot(Generic[M, R]):
    """One caller's member and, once its transaction is over, its result or error."""

    __slots__ = ("done", "error", "member", "result")

    def __init__(self, member: M) -> None:
        self.member = member
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None

    def answer(self) -> R:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommitter(Generic[M, R]):
    """Commits members of concurrent callers together with ``commit`` (a whole transaction,
    retries included), which returns one result per member, in order, or raises."""

    def __init__(self, commit: Callable[[list[M]], list[R]]) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._queue: list[_Slot[M, R]] = []
        self._leading = False
        # counters, read by tests and benchmarks (written by the leader only)
        self.transactions = 0  # calls of ``commit``: groups and members committed alone
        self.members = 0  # members answered
        self.largest = 0  # the largest group
        self.fallbacks = 0  # groups that failed and were committed member by member

    @property
    def waiting(self) -> int:
        """Members queued behind the transaction in progress."""
        with self._cond:
            return len(self._queue)

    def submit(self, member: M) -> R:
        """Commit ``member``, with whoever else is waiting; returns after its commit."""
        slot: _Slot[M, R] = _Slot(member)
        with self._cond:
            self._queue.append(slot)
            while self._leading and not slot.done:
                self._cond.wait()
            if slot.done:  # a leader committed it
                return slot.answer()
            self._leading = True  # this caller leads: it takes the queue, its own slot included
            group, self._queue = self._queue, []
        try:
            self._run(group)
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()
        return slot.answer()

    def _run(self, group: list[_Slot[M, R]]) -> None:
        try:
            try:
                self.transactions += 1
                results = self._commit([s.member for s in group])
            except Exception as exc:
                if len(group) == 1:
                    group[0].error = exc
                    return
                self.fallbacks += 1
                log.info(
                    "group commit of %d failed (%s); committing each alone",
                    len(group),
                    type(exc).__name__,
                )
                for slot in group:
                    self.transactions += 1
                    try:
                        slot.result = self._commit([slot.member])[0]
                    except Exception as alone:
                        slot.error = alone
                return
            for slot, result in zip(group, results, strict=True):
                slot.result = result
        finally:  # every member is answered, even when the leader is interrupted
            for slot in group:
                if slot.result is None and slot.error is None:
                    slot.error = RuntimeError("the group commit was interrupted")
                slot.done = True
            self.members += len(group)
            self.largest = max(self.largest, len(group))
