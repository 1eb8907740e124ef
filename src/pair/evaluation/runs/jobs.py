"""Who executes an evaluation run: one executor at a time, heartbeats, start-up resume.

A run is executed by one thread of one process at a time. ``claim`` moves the row to 'running'
with a single conditional UPDATE and stamps a runner token (``host:pid:nonce``); it succeeds only
from 'queued', 'failed' or 'done' (run again: replayed from the cache), or from 'running' when
the previous executor is gone: its token names a process on this host that no longer exists, or
its heartbeat (refreshed every ``HEARTBEAT_S`` while it works) is older than ``STALE_S`` (an
executor on another host that died). Two processes racing for the same run cannot both win: the
database applies the UPDATE to the row once.

``resume_interrupted`` is what ``pair serve`` calls at start-up: every run left 'queued' or
'running' by a server that was stopped or killed is executed again in the background. Inference
results are cached per algorithm version and instance, so a resumed run continues where it
stopped instead of starting over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import and_, or_, select, update

from pair.core.errors import Conflict, NotFound
from pair.core.node import Node
from pair.evaluation.runs.models import EvaluationRun, RunStatus

log = logging.getLogger("pair.evaluation.runs")

HEARTBEAT_S = 5.0
STALE_S = 30.0
_HOST = socket.gethostname()[:80]
_mine: set[str] = set()  # tokens of runs this process is executing now
_mine_lock = threading.Lock()


def new_token() -> str:
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed process not yet reaped by its parent still answers kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def executor_gone(token: str) -> bool:
    """True when ``token`` names a process on this host that cannot be executing the run."""
    parts = token.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        with _mine_lock:
            return token not in _mine
    return _process_gone(pid)


def claim(node: Node, run_id: int, stale_s: float = STALE_S) -> str:
    """Become the run's executor (conditional UPDATE) and return the runner token.

    ``Conflict`` when another live executor has the run; ``NotFound`` when there is none.
    """
    with node.db.session() as s:  # read first, in its own transaction (no lock upgrade)
        row = s.get(EvaluationRun, run_id)
        if row is None:
            raise NotFound(f"No evaluation run {run_id}.")
        status, runner, beat = row.status, row.runner, row.heartbeat
    token, now = new_token(), time.time()
    col = EvaluationRun
    free = [
        col.status.in_([RunStatus.QUEUED, RunStatus.FAILED, RunStatus.DONE]),
        and_(col.status == RunStatus.RUNNING, col.heartbeat < now - stale_s),
    ]
    if status == RunStatus.RUNNING and runner and executor_gone(runner):
        free.append(and_(col.status == RunStatus.RUNNING, col.runner == runner))
    with _mine_lock:
        _mine.add(token)
    with node.db.session() as s:
        done = s.execute(
            update(col)
            .where(col.id == run_id, or_(*free))
            .values(status=RunStatus.RUNNING, runner=token, heartbeat=now)
            .execution_options(synchronize_session=False)
        )
        won = getattr(done, "rowcount", 0) == 1
    if not won:
        release(token)
        ago = max(0.0, now - beat)
        raise Conflict(
            f"Evaluation run {run_id} is being executed by another process (last sign of life "
            f"{ago:.0f} s ago); it can be taken over when that process has stopped."
        )
    return token


class Interrupted(Exception):
    """The executor stopped on purpose (server shutdown); the run is to be resumed later."""


def requeue(node: Node, run_id: int, token: str, reason: str) -> None:
    """Give the run back as 'queued' (if still ours): the next ``pair serve`` start resumes it."""
    col = EvaluationRun
    with node.db.session() as s:
        s.execute(
            update(col)
            .where(col.id == run_id, col.runner == token, col.status == RunStatus.RUNNING)
            .values(status=RunStatus.QUEUED, runner="", error=reason)
            .execution_options(synchronize_session=False)
        )


def release(token: str) -> None:
    with _mine_lock:
        _mine.discard(token)


class Heartbeat:
    """Refresh the run's heartbeat in a daemon thread while its executor works."""

    def __init__(self, node: Node, run_id: int, token: str, every_s: float = HEARTBEAT_S) -> None:
        self.node, self.run_id, self.token, self.every_s = node, run_id, token, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def _beat(self) -> None:
        col = EvaluationRun
        while not self._stop.wait(self.every_s):
            try:
                with self.node.db.session() as s:
                    s.execute(
                        update(col)
                        .where(col.id == self.run_id, col.runner == self.token)
                        .values(heartbeat=time.time())
                        .execution_options(synchronize_session=False)
                    )
            except Exception:  # a busy database now and then must not end the run
                log.warning("evaluation run %s: heartbeat not written", self.run_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def interrupted_runs(node: Node) -> list[int]:
    """Runs a stopped or killed server left behind (queued or running)."""
    with node.db.session() as s:
        return list(
            s.scalars(
                select(EvaluationRun.id)
                .where(EvaluationRun.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
                .order_by(EvaluationRun.id)
            )
        )


def resume_interrupted(
    node: Node,
    execute: Callable[[int, str], object],
    stop: threading.Event | None = None,
    poll_s: float = HEARTBEAT_S,
    stale_s: float = STALE_S,
) -> list[threading.Thread]:
    """Start a background thread per interrupted run; each claims the run, then ``execute``s it.

    A run whose executor may still be alive (another host, or a process that still exists) is
    retried every ``poll_s`` until its heartbeat is older than ``stale_s`` or it ended.
    """
    stop = stop or threading.Event()
    threads = []
    for run_id in interrupted_runs(node):
        t = threading.Thread(
            target=_resume_one,
            args=(node, run_id, execute, stop, poll_s, stale_s),
            name=f"evaluation-resume-{run_id}",
            daemon=True,
        )
        t.start()
        threads.append(t)
    return threads


def _resume_one(
    node: Node,
    run_id: int,
    execute: Callable[[int, str], object],
    stop: threading.Event,
    poll_s: float,
    stale_s: float,
) -> None:
    while not stop.is_set():
        try:
            token = claim(node, run_id, stale_s)
        except NotFound:
            return
        except Conflict:
            with node.db.session() as s:
                status = s.scalar(select(EvaluationRun.status).where(EvaluationRun.id == run_id))
            if status not in (RunStatus.QUEUED, RunStatus.RUNNING):
                return  # finished or failed meanwhile, by whoever had it
            stop.wait(poll_s)
            continue
        except Exception:
            log.exception("evaluation run %s: cannot resume", run_id)
            return
        log.info("resuming evaluation run %s", run_id)
        try:
            execute(run_id, token)
        except Exception:  # the row carries status 'failed' and the reason
            log.info("evaluation run %s ended with an error", run_id)
        return
