"""Sandboxed inference: cases → per-class outputs, through a separate onnxruntime worker.

The worker (``pair.algorithms.worker``) runs with no network, an address-space limit and a
fixed number of threads. Each case gets a wall-clock limit; a case that overruns is killed and
reported as ``timeout``, and the next case starts a fresh worker. Per-instance results are cached
under ``cache_dir`` by (algorithm cache key, instance SHA-256), so a re-run only computes what is
missing: interrupted runs resume, finished runs replay instantly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import pair
from pair.algorithms.limits import Limits, default_limits
from pair.algorithms.manifest import Manifest
from pair.algorithms.postprocess import case_score
from pair.algorithms.preprocess import aggregate


@dataclass(frozen=True)
class LoadedAlgorithm:
    """What the runner needs: the manifest, the model file and its checksum."""

    manifest: Manifest
    model_path: Path
    sha256: str

    @property
    def ref(self) -> str:
        return f"{self.manifest.id}@{self.manifest.version}"

    @property
    def cache_key(self) -> str:
        """Model checksum plus the input/output contract: same key ⇒ same outputs."""
        contract = self.manifest.model_dump(mode="json", include={"input", "output", "modality"})
        blob = self.sha256 + json.dumps(contract, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Case:
    case_id: str
    paths: list[Path]


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


class WorkerFailure(Exception):
    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message


def _child_env(limits: Limits) -> dict[str, str]:
    """A minimal environment: no proxies or credentials leak into the worker."""
    src = str(Path(pair.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": path,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(limits.threads)
    return env


class WorkerProcess:
    """One running worker; JSON lines over pipes, every read bounded by a deadline."""

    def __init__(self, algorithm: LoadedAlgorithm, limits: Limits) -> None:
        self.limits = limits
        cmd = [
            sys.executable,
            "-m",
            "pair.algorithms.worker",
            "--memory-mb",
            str(limits.memory_limit_mb),
            "--threads",
            str(limits.threads),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_child_env(limits),
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        config = {
            "model": str(Path(algorithm.model_path).resolve()),
            "manifest": algorithm.manifest.model_dump(mode="json"),
        }
        try:
            self.ready = self.request(config, limits.load_timeout_s, what="model load")
        except WorkerFailure:
            self.kill()
            raise
        if not self.ready.get("ok"):
            self.kill()
            raise WorkerFailure(
                self.ready.get("reason", "model load failed"), self.ready.get("message", "")
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, msg: dict[str, Any]) -> None:
        """Queue a request; a dead worker shows up as end-of-file on the next ``receive``."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self.proc.stdin.flush()

    def receive(self, timeout_s: float, timeout_message: str) -> dict[str, Any]:
        """The next reply, or ``WorkerFailure`` (timeout: the worker is killed)."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sel.select(remaining):
                self.kill()
                raise WorkerFailure("timeout", timeout_message)
            assert self.proc.stdout is not None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise self._died()
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            reply: dict[str, Any] = json.loads(line)
        except ValueError:
            self.kill()
            raise WorkerFailure("worker crash", "unreadable reply from the worker") from None
        return reply

    def request(self, msg: dict[str, Any], timeout_s: float, what: str = "case") -> dict[str, Any]:
        self.send(msg)
        return self.receive(timeout_s, f"{what} exceeded the limit of {timeout_s:g} s")

    def _died(self) -> WorkerFailure:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.returncode
        self.kill()
        if rc == -signal.SIGKILL:
            return WorkerFailure(
                "out of memory",
                "worker was killed (SIGKILL), most likely by the kernel's out-of-memory killer",
            )
        if rc is not None and rc < 0:
            return WorkerFailure("worker crash", f"worker died with {signal.Signals(-rc).name}")
        return WorkerFailure("worker crash", f"worker exited with code {rc}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._sel.close()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def close(self) -> None:
        self.kill()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"values": values}))
        os.replace(tmp, path)


ProgressCallback = Callable[[int, CaseResult], None]
PIPELINE_DEPTH = 2  # requests queued at the worker: it never waits for the parent
MAX_LOOKAHEAD = 64  # cases prepared (hashed, looked up in the cache) ahead of the oldest


def run_inference(
    algorithm: LoadedAlgorithm,
    cases: Iterable[Case],
    cache_dir: Path | None = None,
    progress_cb: ProgressCallback | None = None,
    limits: Limits | None = None,
) -> Iterator[CaseResult]:
    """Yield one ``CaseResult`` per case, in input order; never raises for a bad case.

    Requests are pipelined (the next case is already queued at the worker while the parent
    hashes, caches and reports), and each case's time limit runs from when the worker starts it.
    """
    scheduler = _Scheduler(
        algorithm, ResultCache(cache_dir, algorithm.cache_key), limits or default_limits()
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


def _prepare(case: Case, cache: ResultCache) -> _Job:
    """Hash the case's files and take what the cache already knows."""
    job = _Job(case, CaseResult(case.case_id))
    if not case.paths:
        job.fail("empty case", "no instances")
        return job
    for path in case.paths:
        try:
            job.shas.append(file_sha256(Path(path)))
        except OSError as exc:
            job.fail("unreadable DICOM", f"cannot read file: {exc.strerror}")
            return job
    for i, sha in enumerate(job.shas):
        hit = cache.get(sha)
        if hit is not None:
            job.values[i] = hit
    job.todo = [i for i in range(len(job.shas)) if i not in job.values]
    job.result.cached = not job.todo
    return job


class _Scheduler:
    def __init__(self, algorithm: LoadedAlgorithm, cache: ResultCache, limits: Limits) -> None:
        self.algorithm = algorithm
        self.cache = cache
        self.limits = limits
        self.worker: WorkerProcess | None = None
        self.load_error: WorkerFailure | None = None  # a model that cannot load fails all
        self.last_reply_at = 0.0

    def close(self) -> None:
        if self.worker is not None:
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
                queue.append(_prepare(case, self.cache))
                self._fill(queue)
            if not queue:
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
                self.worker = WorkerProcess(self.algorithm, self.limits)
            except WorkerFailure as exc:
                if exc.reason == "model load failed":
                    self.load_error = exc
                job.fail(exc.reason, exc.message)
                return
        paths = [str(Path(job.case.paths[i]).resolve()) for i in job.todo]
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


def smoke_test(algorithm: LoadedAlgorithm, limits: Limits | None = None) -> list[str]:
    """Load the model in the sandbox and run synthetic inputs; problems as messages."""
    limits = limits or default_limits()
    prefix = "smoke inference"
    try:
        worker = WorkerProcess(algorithm, limits)
    except WorkerFailure as exc:
        return [_smoke_message(prefix + " (model load)", exc.reason, exc.message, limits)]
    try:
        reply = worker.request({"op": "smoke"}, limits.case_timeout_s, what="smoke inference")
    except WorkerFailure as exc:
        return [_smoke_message(prefix, exc.reason, exc.message, limits)]
    finally:
        worker.close()
    if not reply.get("ok"):
        return [
            _smoke_message(prefix, reply.get("reason", "failed"), reply.get("message", ""), limits)
        ]
    return []


def _smoke_message(prefix: str, reason: str, message: str, limits: Limits) -> str:
    if reason == "out of memory":
        return f"{prefix}: out of memory (limit {limits.memory_limit_mb} MB): {message}"
    if reason == "timeout":
        return f"{prefix}: timeout: {message}"
    return f"{prefix}: {reason}: {message}"


def probe_network(
    algorithm: LoadedAlgorithm,
    host: str,
    port: int,
    limits: Limits | None = None,
    file: Path | None = None,
) -> dict[str, Any]:
    """Ask a live worker to open a TCP connection (and write ``file``); both must be blocked."""
    limits = limits or default_limits()
    msg: dict[str, Any] = {"op": "probe", "host": host, "port": port}
    if file is not None:
        msg["file"] = str(file)
    with WorkerProcess(algorithm, limits) as worker:
        return worker.request(msg, limits.case_timeout_s)
