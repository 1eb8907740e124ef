"""The inference sandbox: one worker process per model, and a pool of warm and spare workers.

The worker (``pair.algorithms.worker``) runs with no network, an address-space limit, no file
writes and a fixed number of threads; it talks JSON lines over pipes, and every read here is
bounded by a deadline, so a hung or crashed worker becomes a ``WorkerFailure`` with a reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pair
from pair.algorithms.manifest import Manifest
from pair.core.config import AlgorithmSettings

log = logging.getLogger(__name__)
_netns_warned = threading.Event()


def _report_netns(status: dict[str, Any]) -> None:
    """Log, once per node process, a worker that could not enter a network namespace: the
    operator must know the socket block is then the only barrier."""
    if status.get("netns") is False and not _netns_warned.is_set():
        _netns_warned.set()
        log.warning("inference sandbox: %s", status.get("netns_detail", "netns not entered"))


@dataclass(frozen=True)
class LoadedAlgorithm:
    """What the runner needs: the manifest, the model file and its checksum, and the limits
    it runs under (``node.settings.algorithms`` when loaded from the node)."""

    manifest: Manifest
    model_path: Path
    sha256: str
    limits: AlgorithmSettings = field(default_factory=AlgorithmSettings, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.manifest.id}@{self.manifest.version}"

    @property
    def cache_key(self) -> str:
        """Model checksum plus the input/output contract: same key ⇒ same outputs."""
        # ``ordinal`` only changes the statistics, not the outputs: caches stay valid
        contract = self.manifest.model_dump(
            mode="json",
            include={"input", "output", "modality"},
            exclude={"output": {"ordinal"}},
        )
        blob = self.sha256 + json.dumps(contract, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


class WorkerFailure(Exception):
    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message


def _child_env(limits: AlgorithmSettings) -> dict[str, str]:
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
    env.update(MALLOC_ENV)
    return env


# glibc malloc: serve the per-image arrays (a few MB) from the heap and keep freed memory,
# instead of mmap/munmap and fresh zeroed pages for every image; measured: the worker's CPU per
# image drops by ~25-30 % (benchmarks/inference_bench.py). Other C libraries ignore these.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}


class WorkerProcess:
    """One running worker; JSON lines over pipes, every read bounded by a deadline."""

    def __init__(
        self,
        algorithm: LoadedAlgorithm | None,
        limits: AlgorithmSettings,
        config: dict[str, Any] | None = None,
        what: str = "model load",
        *,
        preload: bool = False,
    ) -> None:
        """Start a worker and load ``algorithm`` (or hand it another first ``config``).

        With neither, the worker is a spare: started and hardened (with ``preload``: imports
        done too), waiting for ``load`` to give it a model.
        """
        self.limits = limits
        self.ready: dict[str, Any] = {}
        cmd = [
            sys.executable,
            "-m",
            "pair.algorithms.worker",
            "--memory-mb",
            str(limits.memory_limit_mb),
            "--threads",
            str(limits.threads),
        ]
        if preload:
            cmd.append("--preload")
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
        if algorithm is not None or config is not None:
            self.load(algorithm, config, what)

    @classmethod
    def spare(cls, limits: AlgorithmSettings) -> WorkerProcess:
        """A pre-started worker (process, sandbox, imports) that has no model yet."""
        return cls(None, limits, preload=True)

    def load(
        self,
        algorithm: LoadedAlgorithm | None,
        config: dict[str, Any] | None = None,
        what: str = "model load",
    ) -> None:
        """Send the first request (load this model); ``WorkerFailure`` kills the worker."""
        if config is None:
            assert algorithm is not None
            config = {
                "model": str(Path(algorithm.model_path).resolve()),
                "manifest": algorithm.manifest.model_dump(mode="json"),
            }
        try:
            self.ready = self.request(config, self.limits.load_timeout_s, what=what)
        except WorkerFailure:
            self.kill()
            raise
        _report_netns(self.ready)
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


PoolKey = tuple[str, str, str]


class WorkerPool:
    """Started workers kept for reuse, per (algorithm, model file, limits); thread-safe.

    A worker only returns to the pool after a run that finished cleanly (no request pending);
    a worker that crashed, timed out or was abandoned mid-run is closed, and the next ``acquire``
    starts a new one. Workers idle longer than ``idle_s`` are closed by a reaper thread, at most
    ``max_idle`` are kept, and all are closed on ``close``. With ``prestart(limits)`` the pool also
    keeps one spare worker for those limits (process started, sandbox entered, onnxruntime and
    pydicom imported) so that the first run of any algorithm only pays for loading its model.
    A used spare is replaced when a run hands its worker back (or at the reaper's next tick), not
    while the run that took it is still busy on the same CPUs.
    """

    def __init__(self, idle_s: float = 300.0, max_idle: int = 4) -> None:
        self.idle_s = idle_s
        self.max_idle = max_idle
        self._idle: dict[PoolKey, list[tuple[float, WorkerProcess]]] = {}
        self._spares: dict[str, WorkerProcess] = {}  # limits JSON -> spare
        self._spare_limits: dict[
            str, AlgorithmSettings
        ] = {}  # limits JSON -> limits (from prestart)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.closed = False
        self.started = 0  # workers started with a model load (not from the idle list)

    @staticmethod
    def _key(algorithm: LoadedAlgorithm, limits: AlgorithmSettings) -> PoolKey:
        return (algorithm.cache_key, str(algorithm.model_path), limits.model_dump_json())

    def take(self, algorithm: LoadedAlgorithm, limits: AlgorithmSettings) -> WorkerProcess | None:
        """An idle, live worker that already has this model loaded, or None."""
        with self._lock:
            self._expire()
            idle = self._idle.get(self._key(algorithm, limits), [])
            while idle:
                _, worker = idle.pop()
                if worker.proc.poll() is None:
                    return worker
                worker.close()
        return None

    def acquire(self, algorithm: LoadedAlgorithm, limits: AlgorithmSettings) -> WorkerProcess:
        """A worker with the model loaded: idle one, else the spare, else a new process."""
        if self.closed:
            raise WorkerFailure("shutting down", "the inference worker pool is closed")
        worker = self.take(algorithm, limits)
        if worker is not None:
            return worker
        spare = self._take_spare(limits)
        self.started += 1
        if spare is not None:
            try:
                spare.load(algorithm)
                return spare
            except WorkerFailure as exc:
                with self._lock:
                    self._refill()
                if exc.reason == "model load failed":  # the model's fault, not the spare's
                    raise
        return WorkerProcess(algorithm, limits)

    def prestart(self, limits: AlgorithmSettings) -> None:
        """Keep a spare worker for ``limits`` from now on (replaced each time one is used)."""
        with self._lock:
            if self.closed:
                return
            self._spare_limits[limits.model_dump_json()] = limits
            self._refill()
            self._start_reaper()

    def _refill(self) -> None:
        """Start a spare where one is wanted and missing or dead (call with the lock held)."""
        if self.closed:
            return
        for key, limits in self._spare_limits.items():
            spare = self._spares.get(key)
            if spare is None or spare.proc.poll() is not None:
                if spare is not None:
                    spare.close()
                self._spares[key] = WorkerProcess.spare(limits)

    def _take_spare(self, limits: AlgorithmSettings) -> WorkerProcess | None:
        with self._lock:
            spare = self._spares.pop(limits.model_dump_json(), None)
        if spare is None or spare.proc.poll() is None:
            return spare
        spare.close()
        return None

    def give(
        self, algorithm: LoadedAlgorithm, limits: AlgorithmSettings, worker: WorkerProcess
    ) -> None:
        """Park a healthy worker after a clean run (closed instead when the pool is closed)."""
        with self._lock:
            if worker.proc.poll() is None and not self.closed:
                self._idle.setdefault(self._key(algorithm, limits), []).append(
                    (time.monotonic(), worker)
                )
                self._trim()
                self._refill()
                self._start_reaper()
                return
        worker.close()

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def _trim(self) -> None:
        """Close the longest-idle workers beyond ``max_idle`` (each holds a loaded model)."""
        parked = sorted(
            ((t, k, w) for k, v in self._idle.items() for t, w in v), key=lambda e: e[0]
        )
        for _, k, w in parked[: max(0, len(parked) - self.max_idle)]:
            self._idle[k] = [e for e in self._idle[k] if e[1] is not w]
            w.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for key, idle in self._idle.items():
            for t, w in idle:
                if now - t >= self.idle_s:
                    w.close()
            self._idle[key] = [(t, w) for t, w in idle if now - t < self.idle_s]

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="worker-pool", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while not self._stop.wait(max(0.05, min(self.idle_s / 2, 30.0))):
            with self._lock:
                self._expire()
                self._refill()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self.closed = True
            for idle in self._idle.values():
                for _, worker in idle:
                    worker.close()
            self._idle.clear()
            for spare in self._spares.values():
                spare.close()
            self._spares.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def smoke_test(algorithm: LoadedAlgorithm, limits: AlgorithmSettings | None = None) -> list[str]:
    """Load the model in the sandbox and run synthetic inputs; problems as messages."""
    limits = limits or algorithm.limits
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


def static_check(
    model_path: Path, manifest: dict[str, Any] | None, limits: AlgorithmSettings
) -> list[str]:
    """Parse and check the ONNX model in a sandboxed worker (see ``onnx_checks``)."""
    config = {"check": str(Path(model_path).resolve()), "manifest": manifest}
    try:
        with WorkerProcess(None, limits, config=config, what="ONNX checks") as worker:
            problems: list[str] = worker.ready["problems"]
            return problems
    except WorkerFailure as exc:
        return [
            _smoke_message(f"{Path(model_path).name}: ONNX checks", exc.reason, exc.message, limits)
        ]


def _smoke_message(prefix: str, reason: str, message: str, limits: AlgorithmSettings) -> str:
    if reason == "out of memory":
        return f"{prefix}: out of memory (limit {limits.memory_limit_mb} MB): {message}"
    if reason == "timeout":
        return f"{prefix}: timeout: {message}"
    return f"{prefix}: {reason}: {message}"


def probe_network(
    algorithm: LoadedAlgorithm,
    host: str,
    port: int,
    limits: AlgorithmSettings | None = None,
    file: Path | None = None,
) -> dict[str, Any]:
    """Ask a live worker to open a TCP connection (and write ``file``); both must be blocked."""
    limits = limits or algorithm.limits
    msg: dict[str, Any] = {"op": "probe", "host": host, "port": port}
    if file is not None:
        msg["file"] = str(file)
    with WorkerProcess(algorithm, limits) as worker:
        return worker.request(msg, limits.case_timeout_s)
