"""Sandboxed inference: cases → per-class outputs, through a separate onnxruntime worker.

The worker (see ``pair.algorithms.sandbox``) runs with no network, an address-space limit and a
fixed number of threads. Each case gets a wall-clock limit; a case that overruns is killed and
reported as ``timeout``, and the next case starts a fresh worker. Per-instance results are cached
under ``cache_dir`` by (algorithm cache key, instance SHA-256), so a re-run only computes what is
missing: interrupted runs resume, finished runs replay instantly.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pair.algorithms.postprocess import case_score
from pair.algorithms.preprocess import aggregate
from pair.algorithms.sandbox import (
    LoadedAlgorithm,
    WorkerFailure,
    WorkerPool,
    WorkerProcess,
    probe_network,
    smoke_test,
)
from pair.core.config import AlgorithmSettings

__all__ = [
    "Case",
    "CaseResult",
    "LoadedAlgorithm",
    "ResultCache",
    "WorkerPool",
    "WorkerProcess",
    "file_sha256",
    "probe_network",
    "run_inference",
    "smoke_test",
]


@dataclass(frozen=True)
class Case:
    """One case: its instance files, and their SHA-256 when already known (the repository's
    index has them), which saves hashing every file again before the cache lookup."""

    case_id: str
    paths: list[Path]
    shas: list[str] | None = None


@dataclass
class CaseResult:
    case_id: str
    outputs: dict[str, float] | None = None
    score: float | None = None
    error: str | None = None
    message: str = ""
    n_images: int = 0
    cached: bool = False
    per_instance: list[list[float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class ResultCache:
    """Per-instance outputs as small JSON files: ``<dir>/<algorithm key>/<sha[:2]>/<sha>.json``."""

    def __init__(self, cache_dir: Path | None, algorithm_key: str) -> None:
        self.root = cache_dir / algorithm_key if cache_dir is not None else None

    def _path(self, sha: str) -> Path:
        assert self.root is not None
        return self.root / sha[:2] / f"{sha}.json"

    def get(self, sha: str) -> list[list[float]] | None:
        if self.root is None:
            return None
        try:
            values: list[list[float]] = json.loads(self._path(sha).read_text())["values"]
            return values
        except (OSError, ValueError, KeyError):
            return None

    def put(self, sha: str, values: list[list[float]]) -> None:
        if self.root is None:
            return
        path = self._path(sha)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # readers never see half a file
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # first result under this prefix: no mkdir call per result
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(json.dumps({"values": values}).encode())
        os.replace(tmp, path)


ProgressCallback = Callable[[int, CaseResult], None]
PIPELINE_DEPTH = 8  # requests queued at the worker, so it never waits for the parent
MAX_LOOKAHEAD = 64  # cases prepared (hashed, looked up in the cache) ahead of the oldest


def run_inference(
    algorithm: LoadedAlgorithm,
    cases: Iterable[Case],
    cache_dir: Path | None = None,
    progress_cb: ProgressCallback | None = None,
    limits: AlgorithmSettings | None = None,
    pool: WorkerPool | None = None,
) -> Iterator[CaseResult]:
    """Yield one ``CaseResult`` per case, in input order; never raises for a bad case.

    Requests are pipelined (the next case is already queued at the worker while the parent
    hashes, caches and reports), and each case's time limit runs from when the worker starts it.
    With a ``pool``, a healthy worker is kept after the run and reused by the next run of the
    same algorithm and limits (no process start or model load: small incremental runs), and a
    new worker comes from the pool's pre-started spare when it has one.
    """
    scheduler = _Scheduler(
        algorithm, ResultCache(cache_dir, algorithm.cache_key), limits or algorithm.limits, pool
    )
    try:
        yield from scheduler.run(cases, progress_cb)
    finally:
        scheduler.close()


@dataclass
class _Job:
    case: Case
    result: CaseResult
    shas: list[str] = field(default_factory=list)
    values: dict[int, list[list[float]]] = field(default_factory=dict)
    todo: list[int] = field(default_factory=list)
    sent_at: float | None = None  # when the request went to the current worker

    @property
    def waiting(self) -> bool:
        return self.result.error is None and bool(self.todo)

    def fail(self, reason: str, message: str) -> None:
        self.result.error, self.result.message = reason, message


def slab_keys(shas: list[str]) -> list[str]:
    """Cache keys of a slab package's per-instance results: a slab's output depends on the
    instance's neighbours, so each key also covers the whole series (any change: recompute)."""
    series = hashlib.sha256("".join(sorted(shas)).encode()).hexdigest()
    return [hashlib.sha256(f"slab:{sha}:{series}".encode()).hexdigest() for sha in shas]


def _prepare(case: Case, cache: ResultCache, slab: bool = False) -> _Job:
    """Hash the case's files and take what the cache already knows.

    A slab package's worker needs the whole series, so one missing result sends all of it."""
    job = _Job(case, CaseResult(case.case_id))
    if not case.paths:
        job.fail("empty case", "no instances")
        return job
    if case.shas is not None and len(case.shas) == len(case.paths):
        job.shas = list(case.shas)
    else:
        for path in case.paths:
            try:
                job.shas.append(file_sha256(Path(path)))
            except OSError as exc:
                job.fail("unreadable DICOM", f"cannot read file: {exc.strerror}")
                return job
    if slab:
        job.shas = slab_keys(job.shas)
    for i, sha in enumerate(job.shas):
        hit = cache.get(sha)
        if hit is not None:
            job.values[i] = hit
    job.todo = [i for i in range(len(job.shas)) if i not in job.values]
    if slab and job.todo:
        job.todo = list(range(len(job.shas)))
    job.result.cached = not job.todo
    return job


class _Scheduler:
    def __init__(
        self,
        algorithm: LoadedAlgorithm,
        cache: ResultCache,
        limits: AlgorithmSettings,
        pool: WorkerPool | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.cache = cache
        self.limits = limits
        self.pool = pool
        self.worker: WorkerProcess | None = None
        self.load_error: WorkerFailure | None = None  # a model that cannot load fails all
        self.last_reply_at = 0.0
        self.finished = False  # every request answered: the worker may be reused

    def close(self) -> None:
        if self.worker is not None:
            if self.pool is not None and self.finished:
                self.pool.give(self.algorithm, self.limits, self.worker)
            else:
                self.worker.close()
            self.worker = None

    def run(
        self, cases: Iterable[Case], progress_cb: ProgressCallback | None
    ) -> Iterator[CaseResult]:
        queue: deque[_Job] = deque()
        source = iter(cases)
        exhausted, done = False, 0
        while True:
            while (
                not exhausted
                and len(queue) < MAX_LOOKAHEAD
                and (self._in_flight(queue) < PIPELINE_DEPTH)
            ):
                case = next(source, None)
                if case is None:
                    exhausted = True
                    break
                slab = self.algorithm.manifest.input.slab is not None
                queue.append(_prepare(case, self.cache, slab))
                self._fill(queue)
            if not queue:
                self.finished = True
                return
            head = queue[0]
            if head.waiting:
                self._fill(queue)
                if head.waiting:
                    self._receive(head, queue)
            if head.waiting:
                continue
            queue.popleft()
            self._finish(head)
            done += 1
            if progress_cb is not None:
                progress_cb(done, head.result)
            yield head.result

    @staticmethod
    def _in_flight(queue: deque[_Job]) -> int:
        return sum(1 for j in queue if j.waiting and j.sent_at is not None)

    def _fill(self, queue: deque[_Job]) -> None:
        """Send unsent cases in order (replies come back in the order of requests)."""
        in_flight = self._in_flight(queue)
        for job in queue:
            if in_flight >= PIPELINE_DEPTH:
                return
            if job.waiting and job.sent_at is None:
                self._send(job)
                if job.sent_at is None:
                    return  # could not start a worker; the job carries the reason
                in_flight += 1

    def _send(self, job: _Job) -> None:
        if self.load_error is not None:
            job.fail(self.load_error.reason, self.load_error.message)
            return
        if self.worker is None:
            try:
                if self.pool is not None:
                    self.worker = self.pool.acquire(self.algorithm, self.limits)
                else:
                    self.worker = WorkerProcess(self.algorithm, self.limits)
            except WorkerFailure as exc:
                if exc.reason == "model load failed":
                    self.load_error = exc
                job.fail(exc.reason, exc.message)
                return
        # absolute (the worker runs in /); abspath needs no system call, unlike resolve()
        paths = [os.path.abspath(job.case.paths[i]) for i in job.todo]
        self.worker.send({"op": "case", "paths": paths})
        job.sent_at = time.monotonic()

    def _receive(self, head: _Job, queue: deque[_Job]) -> None:
        assert self.worker is not None and head.sent_at is not None
        limit = self.limits.case_timeout_s
        started = max(head.sent_at, self.last_reply_at)
        try:
            reply = self.worker.receive(
                started + limit - time.monotonic(), f"case exceeded the limit of {limit:g} s"
            )
        except WorkerFailure as exc:
            head.fail(exc.reason, exc.message)
            self.close()
            for job in queue:  # queued at the dead worker: send again to the next one
                job.sent_at = None
            return
        self.last_reply_at = time.monotonic()
        head.sent_at = None
        if not reply.get("ok"):
            head.fail(reply.get("reason", "worker error"), reply.get("message", ""))
            return
        for i, inst in zip(head.todo, reply["instances"], strict=True):
            if "values" not in inst:
                head.fail(inst["reason"], inst.get("message", ""))
                return
            head.values[i] = inst["values"]
            self.cache.put(head.shas[i], inst["values"])
        head.todo = []

    def _finish(self, job: _Job) -> None:
        result = job.result
        if result.error is not None:
            return
        per_image = [row for i in range(len(job.shas)) for row in job.values[i]]
        result.per_instance = per_image
        result.n_images = len(per_image)
        spec = self.algorithm.manifest
        case_values = aggregate(np.asarray(per_image, dtype=np.float64), spec.input.aggregation)
        result.outputs = {
            c.name: float(v) for c, v in zip(spec.output.classes, case_values, strict=True)
        }
        result.score = case_score(case_values, spec.output)
