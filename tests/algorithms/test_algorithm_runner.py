"""The sandboxed runner on real DICOM and wrapped PNGs: results, cache, failures, isolation."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pydicom
import pytest

from pair.algorithms.preprocess import preprocess_dataset
from pair.algorithms.runner import (
    Case,
    CaseResult,
    LoadedAlgorithm,
    WorkerPool,
    WorkerProcess,
    probe_network,
    run_inference,
)
from pair.algorithms.wrap import png_to_dicom
from pair.core.config import AlgorithmSettings
from tests.algorithms.algo_builders import (
    DEMO_DIR,
    load_algorithm,
    manifest,
    mean_model,
    slow_model,
    wrap_shared_pngs,
    write_package,
)

FAST = AlgorithmSettings(case_timeout_s=3, load_timeout_s=30, memory_limit_mb=1536)


@pytest.fixture(scope="module")
def demo() -> LoadedAlgorithm:
    return load_algorithm(DEMO_DIR)


@pytest.fixture(scope="module")
def wrapped_pngs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return wrap_shared_pngs(shared_data, tmp_path_factory.mktemp("wrapped"), 12, varied=True)


def test_demo_on_real_dicom(demo: LoadedAlgorithm, shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "dicom"
    cases = [
        Case(n, [d / n])
        for n in (
            "highdicom_dx_image.dcm",
            "txv_siim_cr_chest_pa.dcm",
            "pydicom_CT_small.dcm",
            "highdicom_sr_document.dcm",
        )
    ]
    seen: list[tuple[int, str]] = []
    results = list(
        run_inference(
            demo, cases, tmp_path / "cache", lambda n, r: seen.append((n, r.case_id)), FAST
        )
    )
    by = {r.case_id: r for r in results}
    for ok in ("highdicom_dx_image.dcm", "txv_siim_cr_chest_pa.dcm"):
        r = by[ok]
        assert r.ok and r.outputs is not None and r.score is not None, r
        assert set(r.outputs) == {"absent", "present"}
        assert r.outputs["present"] == pytest.approx(r.score)
        assert sum(r.outputs.values()) == pytest.approx(1.0)
    assert by["pydicom_CT_small.dcm"].error == "wrong modality"
    assert "CT is not one of CR, DX" in by["pydicom_CT_small.dcm"].message
    assert by["highdicom_sr_document.dcm"].error == "wrong modality"
    assert seen == [(i + 1, c.case_id) for i, c in enumerate(cases)]


def test_ct_package_on_real_ct(shared_data: Path, tmp_path: Path) -> None:
    m = manifest(
        **{"modality": ["CT"], "input.scaling": {"kind": "window", "center": -600, "width": 1500}}
    )
    alg = load_algorithm(write_package(tmp_path / "ct", m, mean_model()))
    ct = shared_data / "dicom/pydicom_CT_small.dcm"
    (r,) = run_inference(alg, [Case("ct", [ct])], None, None, FAST)
    ds = pydicom.dcmread(ct)
    x = preprocess_dataset(ds, alg.manifest.input)
    assert r.ok and r.score == pytest.approx(float(x.mean()), rel=1e-5)


def test_matches_bare_onnxruntime_and_cache(
    demo: LoadedAlgorithm, wrapped_pngs: list[Path], tmp_path: Path
) -> None:
    cases = [Case(p.stem, [p]) for p in wrapped_pngs]
    first = list(run_inference(demo, cases, tmp_path / "cache", None, FAST))
    assert all(r.ok and not r.cached for r in first)
    sess = ort.InferenceSession(str(demo.model_path), providers=["CPUExecutionProvider"])
    for r, p in zip(first, wrapped_pngs, strict=True):
        x = preprocess_dataset(pydicom.dcmread(p), demo.manifest.input)
        logit = float(sess.run(None, {"image": x})[0][0, 0])
        assert r.score == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-6)
    t0 = time.perf_counter()
    again = list(run_inference(demo, cases, tmp_path / "cache", None, FAST))
    assert time.perf_counter() - t0 < 5.0  # no worker started: everything from the cache
    assert all(r.cached for r in again)
    assert [r.outputs for r in again] == [r.outputs for r in first]


def test_series_aggregation(demo: LoadedAlgorithm, wrapped_pngs: list[Path]) -> None:
    singles = list(
        run_inference(demo, [Case(p.stem, [p]) for p in wrapped_pngs[:3]], None, None, FAST)
    )
    (series,) = run_inference(demo, [Case("s", wrapped_pngs[:3])], None, None, FAST)
    assert series.n_images == 3
    assert series.score == pytest.approx(max(r.score or 0 for r in singles))


def test_unreadable_and_missing_files(demo: LoadedAlgorithm, tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 200)
    results = list(
        run_inference(
            demo,
            [Case("bad", [bad]), Case("gone", [tmp_path / "no.dcm"]), Case("empty", [])],
            None,
            None,
            FAST,
        )
    )
    assert [r.error for r in results] == ["unreadable DICOM", "unreadable DICOM", "empty case"]


def _worker_pids() -> list[int]:
    """Our own worker children (the test's child processes running the worker module)."""
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
        if ppid == os.getpid() and b"pair.algorithms.worker" in cmd:
            pids.append(int(entry))
    return pids


def test_timeout_and_crash_are_reported_and_run_continues(
    wrapped_pngs: list[Path], tmp_path: Path
) -> None:
    slow = load_algorithm(write_package(tmp_path / "slow", manifest(), slow_model()))
    cases = [Case("crash", [wrapped_pngs[0]]), Case("timeout", [wrapped_pngs[1]])]

    def crash_first_worker() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = _worker_pids()
            if pids:
                time.sleep(0.5)  # let it load and start the case
                os.kill(pids[0], signal.SIGSEGV)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=crash_first_worker)
    killer.start()
    results: list[CaseResult] = list(run_inference(slow, cases, None, None, FAST))
    killer.join()
    assert (results[0].error, results[0].message) == ("worker crash", "worker died with SIGSEGV")
    assert results[1].error == "timeout"
    assert results[1].message == "case exceeded the limit of 3 s"
    assert _worker_pids() == []  # nothing left running


def test_out_of_memory_during_a_case(wrapped_pngs: list[Path], tmp_path: Path) -> None:
    from tests.algorithms.algo_builders import memory_hog_model

    hog = load_algorithm(write_package(tmp_path / "hog", manifest(), memory_hog_model()))
    (r,) = run_inference(hog, [Case("c", [wrapped_pngs[0]])], None, None, FAST)
    assert r.error == "out of memory"


def test_worker_has_no_network_and_cannot_write(demo: LoadedAlgorithm, tmp_path: Path) -> None:
    """A listening server on localhost never sees the worker's connection attempt."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        reply = probe_network(demo, "127.0.0.1", port, FAST, file=tmp_path / "written")
        assert reply["network_blocked"] is True
        assert "network access is disabled" in reply["detail"]
        assert reply["rlimit_as"] == FAST.memory_limit_mb * 1024 * 1024
        assert reply["rlimit_fsize"] == 0 and reply["no_new_privs"] is True
        assert reply["file_write_blocked"] is True
        assert not (tmp_path / "written").exists() or (tmp_path / "written").stat().st_size == 0
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def _netns(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def test_worker_reports_its_network_namespace_truthfully(demo: LoadedAlgorithm) -> None:
    """The worker's ``netns`` claim is checked against the kernel: its /proc/PID/ns/net
    differs from ours and holds no interface but loopback, or, if it says it could not enter
    one, it says so in words and really shares our namespace."""
    with WorkerProcess(demo, FAST) as worker:
        reply = worker.request({"op": "probe", "host": "127.0.0.1", "port": 9}, 10)
        theirs = _netns(worker.pid)
        devices = Path(f"/proc/{worker.pid}/net/dev").read_text().splitlines()[2:]
    interfaces = {line.split(":", 1)[0].strip() for line in devices}
    if reply["netns"] is True:
        assert reply["netns_detail"] == "entered an empty network namespace"
        assert theirs != _netns("self")
        assert interfaces <= {"lo"}
    else:
        assert reply["netns"] is False
        assert reply["netns_detail"].startswith("network namespace NOT entered (")
        assert "the in-process socket block is the only network barrier" in reply["netns_detail"]
        assert theirs == _netns("self")
    if _can_unshare():
        assert reply["netns"] is True, reply["netns_detail"]


def _can_unshare() -> bool:
    """Whether this machine lets a process enter a user + network namespace (as the worker
    tries): then the worker must have entered one."""
    if shutil.which("unshare") is None:
        return False
    run = subprocess.run(["unshare", "-Un", "true"], capture_output=True, check=False)
    return run.returncode == 0


def test_worker_says_clearly_when_it_cannot_enter_a_network_namespace() -> None:
    """unshare(CLONE_NEWUSER) fails in a multithreaded process (EINVAL): the real failure path,
    which must be reported as a sentence naming the kernel's reason, never as a silent pass."""
    code = (
        "import json, os, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "from pair.algorithms.worker import harden\n"
        "status = harden(1024, 1)\n"
        "print(json.dumps({**status, 'ns': os.readlink('/proc/self/ns/net')}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    assert status["netns"] is False
    assert status["netns_detail"] == (
        "network namespace NOT entered (unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: "
        "Invalid argument (errno 22)); the in-process socket block is the only network barrier"
    )
    assert status["ns"] == _netns("self")


def test_node_logs_a_worker_without_network_namespace(caplog: pytest.LogCaptureFixture) -> None:
    from pair.algorithms import sandbox

    sandbox._netns_warned.clear()
    detail = "network namespace NOT entered (unshare failed: Operation not permitted (errno 1))"
    with caplog.at_level(logging.WARNING, logger="pair.algorithms.sandbox"):
        sandbox._report_netns({"netns": True, "netns_detail": "entered"})
        assert not caplog.records
        sandbox._report_netns({"netns": False, "netns_detail": detail})
        sandbox._report_netns({"netns": False, "netns_detail": detail})  # once per process
    assert [r.getMessage() for r in caplog.records] == [f"inference sandbox: {detail}"]


def test_model_that_cannot_load_fails_every_case_once(
    tmp_path: Path, wrapped_pngs: list[Path]
) -> None:
    folder = write_package(tmp_path / "p", manifest(), mean_model())
    alg = load_algorithm(folder)
    (folder / "model.onnx").write_bytes(b"corrupted after validation")
    results = list(
        run_inference(alg, [Case(str(i), [wrapped_pngs[0]]) for i in range(3)], None, None, FAST)
    )
    assert {r.error for r in results} == {"model load failed"}


def test_demo_scores_vary_on_real_radiographs(
    demo: LoadedAlgorithm, wrapped_pngs: list[Path]
) -> None:
    """The demo must give an evaluation something to rank (its values mean nothing clinically)."""
    scores = [
        r.score
        for r in run_inference(demo, [Case(p.stem, [p]) for p in wrapped_pngs], None, None, FAST)
    ]
    assert all(s is not None for s in scores)
    assert len({round(s or 0, 4) for s in scores}) > 3


def test_timeout_mid_run_keeps_order_and_requeues(wrapped_pngs: list[Path], tmp_path: Path) -> None:
    """Cases queued behind a case that times out are re-sent to a fresh worker, in order."""
    from PIL import Image

    from tests.algorithms.algo_builders import slow_if_bright_model

    alg = load_algorithm(write_package(tmp_path / "cond", manifest(), slow_if_bright_model()))
    dark = []
    for i in range(3):
        png = tmp_path / f"dark{i}.png"
        Image.new("L", (40 + i, 40), 0).save(png)
        dark.append(tmp_path / f"dark{i}.dcm")
        png_to_dicom(png, dark[-1])
    cases = [
        Case("d0", [dark[0]]),
        Case("bright", [wrapped_pngs[0]]),
        Case("d1", [dark[1]]),
        Case("d2", [dark[2]]),
    ]
    results = list(run_inference(alg, cases, None, None, FAST))
    assert [r.case_id for r in results] == ["d0", "bright", "d1", "d2"]
    assert [r.error for r in results] == [None, "timeout", None, None]
    assert results[2].score == 0.0 and _worker_pids() == []


def test_worker_pool_reuses_a_warm_worker(
    demo: LoadedAlgorithm, wrapped_pngs: list[Path], tmp_path: Path
) -> None:
    with WorkerPool() as pool:
        first = list(run_inference(demo, [Case("a", [wrapped_pngs[0]])], None, None, FAST, pool))
        (pid,) = _worker_pids()  # parked, not closed
        second = list(run_inference(demo, [Case("b", [wrapped_pngs[1]])], None, None, FAST, pool))
        assert _worker_pids() == [pid]  # the same process answered: no start, no model load
        assert first[0].ok and second[0].ok
        slow = load_algorithm(write_package(tmp_path / "slow", manifest(), slow_model()))
        (r,) = run_inference(slow, [Case("s", [wrapped_pngs[0]])], None, None, FAST, pool)
        assert r.error == "timeout" and _worker_pids() == [pid]  # a killed worker is not parked
        abandoned = run_inference(
            demo, [Case(str(i), [p]) for i, p in enumerate(wrapped_pngs)], None, None, FAST, pool
        )
        next(abandoned)
        abandoned.close()  # requests still queued: that worker is closed, not parked
        assert _worker_pids() == []
    assert _worker_pids() == []


def test_fixed_batch_one_model_runs_series(wrapped_pngs: list[Path], tmp_path: Path) -> None:
    from pair.algorithms.sandbox import smoke_test

    alg = load_algorithm(
        write_package(tmp_path / "b1", manifest(), mean_model(in_shape=[1, 1, 32, 32]))
    )
    assert smoke_test(alg, FAST) == []  # batch 1 only: no batch-2 smoke run
    (r,) = run_inference(alg, [Case("s", wrapped_pngs[:3])], None, None, FAST)
    assert r.ok and r.n_images == 3
