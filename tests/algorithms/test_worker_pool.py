"""The warm worker pool a server keeps: spare workers, reuse, replacement, idle reaping.

Every worker still comes out of the same sandbox (no network, memory and file-size limits);
these tests check that a pre-started spare and a reused worker keep those guarantees.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from pair.algorithms.runner import Case, LoadedAlgorithm, WorkerPool, run_inference
from pair.algorithms.sandbox import WorkerFailure, WorkerProcess
from pair.core.config import AlgorithmSettings
from tests.algorithms.algo_builders import (
    DEMO_DIR,
    load_algorithm,
    manifest,
    mean_model,
    wrap_shared_pngs,
    write_package,
)

FAST = AlgorithmSettings(case_timeout_s=5, load_timeout_s=30, memory_limit_mb=1536)


@pytest.fixture(scope="module")
def demo() -> LoadedAlgorithm:
    return load_algorithm(DEMO_DIR)


@pytest.fixture(scope="module")
def images(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return wrap_shared_pngs(shared_data, tmp_path_factory.mktemp("pool"), 4)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_dead(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_spare_worker_serves_a_new_algorithm_and_keeps_the_sandbox(
    demo: LoadedAlgorithm, images: list[Path], tmp_path: Path
) -> None:
    with WorkerPool() as pool:
        pool.prestart(FAST)
        spare = pool._spares[FAST.model_dump_json()]
        worker = pool.acquire(demo, FAST)
        assert worker.pid == spare.pid  # the pre-started process got the model
        assert worker.ready["ok"] and worker.ready["load_s"] < 5
        assert FAST.model_dump_json() not in pool._spares  # no new spare while the run works
        environ = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
        assert b"MALLOC_MMAP_THRESHOLD_=33554432" in environ  # arrays from the heap, not mmap
        assert not any(v.startswith((b"HOME=", b"http_proxy=")) for v in environ)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        try:
            probe = {"op": "probe", "host": "127.0.0.1", "port": listener.getsockname()[1]}
            reply = worker.request({**probe, "file": str(tmp_path / "w")}, 5)
        finally:
            listener.close()
        assert reply["network_blocked"] is True and reply["file_write_blocked"] is True
        assert reply["rlimit_as"] == FAST.memory_limit_mb * 1024 * 1024
        assert reply["no_new_privs"] is True
        (r,) = run_inference(demo, [Case("a", images[:1])], None, None, FAST, pool)
        assert r.ok
        replacement = pool._spares[FAST.model_dump_json()]  # started when the run ended
        assert replacement.pid != spare.pid and _alive(replacement.pid)
        worker.close()
    assert _wait_dead(replacement.pid)  # close() ends spares too


def test_warm_worker_reused_and_a_dead_one_replaced(
    demo: LoadedAlgorithm, images: list[Path]
) -> None:
    with WorkerPool() as pool:
        cases = [Case(str(i), [p]) for i, p in enumerate(images)]
        assert all(r.ok for r in run_inference(demo, cases, None, None, FAST, pool))
        assert pool.idle_count() == 1 and pool.started == 1
        first = pool.take(demo, FAST)
        assert first is not None
        pool.give(demo, FAST, first)
        assert all(r.ok for r in run_inference(demo, cases, None, None, FAST, pool))
        assert pool.started == 1  # second run: no new process, no model load
        parked = pool.take(demo, FAST)
        assert parked is not None and parked.pid == first.pid
        pool.give(demo, FAST, parked)
        os.kill(parked.pid, signal.SIGKILL)  # dies while parked
        os.waitid(os.P_PID, parked.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
        results = list(run_inference(demo, cases, None, None, FAST, pool))
        assert all(r.ok for r in results), [(r.error, r.message) for r in results]
        assert pool.started == 2  # a fresh worker replaced the dead one
        replaced = pool.take(demo, FAST)
        assert replaced is not None and replaced.pid != parked.pid
        replaced.close()


def test_crash_mid_run_replaces_the_worker(demo: LoadedAlgorithm, images: list[Path]) -> None:
    cases = [Case(str(i), [p]) for i, p in enumerate(images * 3)]
    with WorkerPool() as pool:
        pool.prestart(FAST)
        results = []
        for r in run_inference(demo, cases, None, None, FAST, pool):
            results.append(r)
            if len(results) == 2:  # kill the run's worker (not the pool's new spare)
                spares = {w.pid for w in pool._spares.values()}
                (running,) = [pid for pid in _pair_workers() if pid not in spares]
                os.kill(running, signal.SIGKILL)
        errors = [r.error for r in results]
        assert errors.count("out of memory") == 1  # SIGKILL reads as the OOM killer
        assert errors[-1] is None and len(results) == len(cases)  # the run went on
        assert pool.idle_count() == 1 and running not in _pair_workers()


def _pair_workers() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"pair.algorithms.worker" in cmd and _alive(int(entry)):
            pids.append(int(entry))
    return pids


def test_idle_workers_are_reaped_and_capped(
    demo: LoadedAlgorithm, images: list[Path], tmp_path: Path
) -> None:
    other = load_algorithm(write_package(tmp_path / "m", manifest(), mean_model()))
    with WorkerPool(idle_s=0.5, max_idle=1) as pool:
        a = pool.acquire(demo, FAST)
        b = pool.acquire(other, FAST)
        pool.give(demo, FAST, a)
        pool.give(other, FAST, b)  # over max_idle: the longest-idle worker (a) is closed
        assert pool.idle_count() == 1 and _wait_dead(a.pid) and _alive(b.pid)
        assert _wait_dead(b.pid, 5)  # the reaper closes it after idle_s without any call
        assert pool.idle_count() == 0
    with pytest.raises(WorkerFailure, match="shutting down"):
        pool.acquire(demo, FAST)  # a closed pool starts nothing
    c = WorkerProcess(demo, FAST)
    pool.give(demo, FAST, c)  # and parks nothing
    assert pool.idle_count() == 0 and _wait_dead(c.pid)


def test_spare_refuses_a_model_that_cannot_load(tmp_path: Path) -> None:
    folder = write_package(tmp_path / "bad", manifest(), mean_model())
    alg = load_algorithm(folder)
    (folder / "model.onnx").write_bytes(b"not onnx")
    with WorkerPool() as pool:
        pool.prestart(FAST)
        with pytest.raises(WorkerFailure) as err:
            pool.acquire(alg, FAST)
        assert err.value.reason == "model load failed"
        spare = pool._spares[FAST.model_dump_json()]
        assert _alive(spare.pid)  # a fresh spare is ready for the next algorithm


def test_known_checksums_skip_hashing(
    demo: LoadedAlgorithm, images: list[Path], tmp_path: Path
) -> None:
    """Repository cases carry the instance SHA-256; the cache is keyed by it, files unhashed."""
    fake = "ab" + "0" * 62
    (r,) = run_inference(demo, [Case("a", images[:1], shas=[fake])], tmp_path, None, FAST)
    assert r.ok
    assert (tmp_path / demo.cache_key / "ab" / f"{fake}.json").is_file()
    (again,) = run_inference(demo, [Case("a", images[1:2], shas=[fake])], tmp_path, None, FAST)
    assert again.cached and again.score == r.score
