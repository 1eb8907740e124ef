"""One executor per evaluation run, and runs resumed after the server was stopped or killed."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from pair.accounts import service as accounts
from pair.algorithms import service as algorithms
from pair.algorithms.sandbox import WorkerPool
from pair.audit.service import Actor
from pair.core.config import get_settings
from pair.core.errors import Conflict
from pair.core.node import Node, open_node
from pair.evaluation.runs import jobs, service
from pair.evaluation.runs.models import EvaluationRun, RunStatus
from tests.algorithms.algo_builders import manifest, slow_model, write_package
from tests.conftest import LiveNode
from tests.evaluation.runs.evalrun_data import create_demo_run, demo_setup, ingest_shared_images


def _bare_run(node: Node) -> int:
    with node.db.session() as s:
        f = accounts.create_facility(s, "Jobs Hospital")
        run = EvaluationRun(
            facility_id=f.id, algorithm_id="x", algorithm_version="1", truth_source="rt-pcr"
        )
        s.add(run)
        s.flush()
        return run.id


def _set(node: Node, run_id: int, **values: object) -> None:
    with node.db.session() as s:
        row = s.get(EvaluationRun, run_id)
        assert row is not None
        for k, v in values.items():
            setattr(row, k, v)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_claim_is_exclusive_and_takes_over_only_dead_executors(node: Node) -> None:
    run_id = _bare_run(node)
    won: list[str] = []
    lost: list[str] = []
    start = threading.Barrier(6)

    def race() -> None:
        start.wait()
        try:
            won.append(jobs.claim(node, run_id))
        except Conflict as exc:
            lost.append(str(exc))

    threads = [threading.Thread(target=race) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 5, (won, lost)
    assert "being executed by another process" in lost[0]
    with node.db.session() as s:
        row = s.get(EvaluationRun, run_id)
        assert row is not None and row.status == RunStatus.RUNNING and row.runner == won[0]
    with pytest.raises(Conflict):  # its executor (this process) is alive and beating
        jobs.claim(node, run_id)

    host = won[0].rsplit(":", 2)[0]
    now = time.time()
    _set(node, run_id, runner=f"{host}:{_dead_pid()}:gone", heartbeat=now)
    taken = jobs.claim(node, run_id)  # a process of this host that no longer exists
    _set(node, run_id, runner="other-host:1:abc", heartbeat=time.time())
    with pytest.raises(Conflict):  # another host, fresh heartbeat: maybe alive
        jobs.claim(node, run_id)
    _set(node, run_id, heartbeat=time.time() - jobs.STALE_S - 1)
    stale = jobs.claim(node, run_id)  # its heartbeat stopped: taken over
    jobs.release(stale)
    _set(node, run_id, runner=stale)  # this pid, but no thread of ours executes it any more
    assert jobs.claim(node, run_id) not in (taken, stale)


def test_heartbeat_only_for_the_owner(sqlite_node: Node) -> None:
    run_id = _bare_run(sqlite_node)
    token = jobs.claim(sqlite_node, run_id)
    _set(sqlite_node, run_id, heartbeat=1.0)
    with jobs.Heartbeat(sqlite_node, run_id, token, every_s=0.05):
        time.sleep(0.4)
    with sqlite_node.db.session() as s:
        row = s.get(EvaluationRun, run_id)
        assert row is not None and row.heartbeat > time.time() - 5
    _set(sqlite_node, run_id, runner="someone-else:1:x", heartbeat=1.0)
    with jobs.Heartbeat(sqlite_node, run_id, token, every_s=0.05):
        time.sleep(0.3)
    with sqlite_node.db.session() as s:
        row = s.get(EvaluationRun, run_id)
        assert row is not None and row.heartbeat == 1.0


class _Crash(Exception):
    pass


def test_startup_resume_finishes_a_stuck_run_from_the_cache(
    sqlite_node: Node, shared_data: Path, tmp_path: Path
) -> None:
    node = sqlite_node
    data, actor = demo_setup(node, shared_data, tmp_path)
    run_id = create_demo_run(node, actor, 50)

    def power_cut(done: int, total: int) -> None:
        if done >= 20:
            raise _Crash("power cut")

    with pytest.raises(_Crash):
        service.execute_run(node, run_id, progress=power_cut)
    host = jobs.new_token().rsplit(":", 2)[0]
    # what a killed server leaves: 'running', its token, a recent heartbeat
    _set(node, run_id, status=RunStatus.RUNNING, runner=f"{host}:{_dead_pid()}:x", error="")
    _set(node, run_id, heartbeat=time.time())
    with WorkerPool() as pool:
        threads = service.resume_interrupted(node, pool)
        assert len(threads) == 1
        threads[0].join(120)
        assert pool.idle_count() == 1  # the run's worker is parked for the next run
        assert service.resume_interrupted(node, pool) == []  # nothing left to resume
    with node.db.session() as s:
        run = s.get(EvaluationRun, run_id)
        assert run is not None and run.status == RunStatus.DONE, run.error
        assert 20 <= run.cohort_summary["inferences_from_cache"] < data.n_images
        assert run.done == run.total == data.n_images


def test_server_shutdown_requeues_the_run_without_spurious_failures(
    sqlite_node: Node, shared_data: Path, tmp_path: Path
) -> None:
    """Closing the pool (pair serve stopping) kills workers mid-case: the run must not finish
    with those cases as failures; it goes back to 'queued' for the next start-up."""
    node = sqlite_node
    data = ingest_shared_images(node, shared_data, tmp_path)
    actor = Actor(None, "eva", data.facility_id, "evaluator", "test")
    slow = write_package(tmp_path / "slow", manifest(), slow_model(80_000))
    with node.db.session() as s:
        algorithms.add_algorithm(s, node, slow, actor)
        run_id = service.create_run(
            s, actor, algorithm="test-cxr", cohort="", truth="rt-pcr", options={"n_boot": 50}
        ).id
    pool = WorkerPool()
    thread = service.start_background(node, run_id, pool)
    deadline = time.time() + 60
    while True:
        with node.db.session() as s:
            row = s.get(EvaluationRun, run_id)
            assert row is not None and time.time() < deadline
            if row.done >= 3:
                break
        time.sleep(0.1)
    with pytest.raises(Conflict, match="being executed"):  # the API's resume: 409
        service.start_background(node, run_id, pool)
    with pytest.raises(Conflict):  # `pair evaluate --resume` meanwhile
        service.execute_run(node, run_id)
    pool.close()
    thread.join(30)
    assert not thread.is_alive()
    with node.db.session() as s:
        row = s.get(EvaluationRun, run_id)
        assert row is not None and row.status == RunStatus.QUEUED, (row.status, row.error)
        assert "server stopped" in row.error and row.failures == [] and row.runner == ""
    assert jobs.interrupted_runs(node) == [run_id]


@pytest.fixture
def live_sqlite(tmp_path: Path) -> LiveNode:
    server = LiveNode(tmp_path / "live", f"sqlite:///{tmp_path / 'live.db'}")
    server.provision()
    return server


@pytest.mark.integration
def test_run_survives_kill_9_and_sigterm_of_the_server(
    live_sqlite: LiveNode, shared_data: Path, tmp_path: Path
) -> None:
    """SIGKILL, then SIGTERM, the real `pair serve` mid-run; each restarted server resumes the
    run from the cache, and the last one finishes it without a spurious failed case."""
    live = live_sqlite
    node = open_node(settings=get_settings(live.data_dir, database_url=live.database_url))
    try:
        data = ingest_shared_images(node, shared_data, tmp_path)
        slow = write_package(tmp_path / "slow", manifest(), slow_model(80_000))  # ~0.15 s/case
        with node.db.session() as s:
            algorithms.add_algorithm(s, node, slow, Actor.system("test", data.facility_id))
    finally:
        node.close()
    headers = {"Authorization": f"Bearer {data.evaluator_token}"}
    live.start()
    try:
        r = httpx.post(
            live.base_url + "/api/evaluations",
            data={"algorithm": "test-cxr", "truth": "rt-pcr", "n_boot": "50"},
            headers=headers,
        )
        assert r.status_code == 202, r.text
        url = f"{live.base_url}/api/evaluations/{r.json()['id']}"
        deadline = time.time() + 60
        while (row := httpx.get(url, headers=headers).json())["done"] < 5:
            assert row["status"] == "running" and time.time() < deadline, row
            time.sleep(0.2)
        live.kill9()
        assert row["done"] < data.n_images  # killed mid-run
        live.start()
        while (row := httpx.get(url, headers=headers).json())["done"] < 20:
            assert row["status"] in ("queued", "running") and time.time() < deadline, row
            time.sleep(0.2)
        live.stop()  # SIGTERM mid-run this time: its killed workers must not fail any case
        assert row["done"] < data.n_images
        live.start()
        deadline = time.time() + 120
        while (row := httpx.get(url, headers=headers).json())["status"] != "done":
            assert row["status"] in ("queued", "running") and time.time() < deadline, row
            time.sleep(0.3)
        assert row["done"] == row["total"] == data.n_images and row["failures"] == []
        assert row["cohort_summary"]["inferences_from_cache"] >= 20
        assert live.log_path.read_text().count("resuming 1 interrupted evaluation run") == 2
    finally:
        live.stop()
