"""Stage one of ingest (parse, de-identify, encode, store) in worker processes.

One Python process can use one core for this CPU-bound work (the GIL); ``pair serve`` keeps a
small pool of worker processes so that concurrent STOW-RS requests and C-STORE associations
use every core. Each worker opens the node's database itself: de-identification mappings are
committed by the worker (they are idempotent and site-private), the files are durable before
the worker answers, and the index rows are written by the caller in the batch's transaction.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from pair.core.config import Settings
from pair.core.node import Node, open_node
from pair.repository.outcomes import Payload
from pair.repository.prepare import WORKERS_ATTACHMENT, Prepared, prepare_batch
from pair.repository.storage import Stores

log = logging.getLogger("pair.ingest.workers")

# the worker process's node and stores, opened once by ``_init_worker``
_node: Node | None = None
_stores: Stores | None = None


def _init_worker(settings: Settings) -> None:
    global _node, _stores
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops the pool itself
    _node = open_node(settings=settings, migrate_db=False)
    _stores = Stores.for_settings(settings)
    # load the pipeline's tables (de-identification, scanner) now, not on the first task
    from pair.deid.engine import safe_private_dictionary
    from pair.deid.scanner import scanner_config
    from pair.deid.table import table_config

    safe_private_dictionary()
    scanner_config()
    table_config()


def _ping(linger_s: float) -> int:
    time.sleep(linger_s)
    return os.getpid()


def prepare_chunk(
    facility_id: int, source: str, expected_study_uid: str | None, payloads: list[Payload]
) -> list[Prepared]:
    """Run stage one for ``payloads`` in this worker (the serving process's very function)."""
    assert _node is not None and _stores is not None, "ingest worker not initialised"
    return prepare_batch(_node, _stores, facility_id, source, expected_study_uid, payloads)


def default_worker_count(cpus: int | None = None) -> int:
    """Worker processes ``pair serve`` starts when ``PAIR_INGEST_WORKERS`` is not set.

    Handing an instance to a worker costs CPU (the bytes cross a pipe; each batch opens its
    own session and de-identifier) and pays only when cores would otherwise sit idle: on a
    2-core machine STOW-RS used more CPU per instance with two workers and got slower, while
    two parallel C-STORE associations got faster (docs/benchmarks.md), so machines with one or
    two cores ingest in the serving process unless told otherwise.
    """
    cpus = cpus or os.cpu_count() or 1
    return 0 if cpus <= 2 else min(4, cpus - 1)


class IngestWorkers:
    """A process pool for ingest stage one, shared by every door of a running node."""

    def __init__(self, settings: Settings, processes: int) -> None:
        if processes < 1:
            raise ValueError("an ingest worker pool needs at least one process")
        self.settings = settings
        self.processes = processes
        settings.site_secret  # noqa: B018 - created here once, before workers read it
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn: the server has threads (uvicorn, DICOM associations); forking them is unsafe
        executor = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.settings,),
        )
        return executor

    def warm_up(self) -> list[int]:
        """Start every worker now (imports, DB connection), not on the first instances.

        The pool spawns processes as tasks arrive; pings that linger a moment land on every
        process. Returns the workers' process ids.
        """
        pids: set[int] = set()
        for _ in range(100):
            futures = [self._executor.submit(_ping, 0.05) for _ in range(self.processes)]
            pids |= {f.result(timeout=120) for f in futures}
            if len(pids) >= self.processes:
                break
        return sorted(pids)

    def prepare(
        self,
        facility_id: int,
        source: str,
        expected_study_uid: str | None,
        payloads: list[Payload],
    ) -> list[Prepared]:
        """Stage one for a batch, split evenly over the workers; results in payload order.

        A worker that dies (for example killed for memory) breaks the pool: it is restarted
        and the error is raised, so the batch is answered as failed, not half-stored.
        """
        n = max(1, min(self.processes, len(payloads)))
        size = -(-len(payloads) // n)
        chunks = [payloads[i : i + size] for i in range(0, len(payloads), size)]
        try:
            futures: list[Future[list[Prepared]]] = [
                self._executor.submit(prepare_chunk, facility_id, source, expected_study_uid, c)
                for c in chunks
            ]
            return [p for f in futures for p in f.result()]
        except BrokenProcessPool:
            log.error("an ingest worker died; restarting the pool")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
            raise

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def attach_workers(node: Node, workers: IngestWorkers | None) -> None:
    """Give the node this pool (``pair serve``); it closes the pool when the node closes."""
    if workers is None:
        node.attachments.pop(WORKERS_ATTACHMENT, None)
    else:
        node.attachments[WORKERS_ATTACHMENT] = workers
