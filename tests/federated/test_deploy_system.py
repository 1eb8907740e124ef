"""System tests: a provisioned FLARE consortium as separate processes on 127.0.0.1.

One server and three sites start once for the module (provisioned with PAIR's site policies);
the tests then submit jobs through the FLARE API with the lead's kit. Order matters only for
the last test, which kills a site. Every process group is stopped by the fixture, also on
failure. Measured on the 2-core CI box: about 2 minutes for the module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe

from pair.federated.flare.deploy import (
    COMPLETED,
    DeploymentError,
    FlareAdmin,
    FlareProcesses,
    JobOutcome,
    export_job,
    last_global_model,
    run_job,
)
from pair.federated.flare.poc import (
    OPERATOR,
    LocalConsortium,
    loopback_consortium,
    running_consortium,
)
from pair.federated.flare.provision import Consortium, provision

JOB_CODE = Path(__file__).parent / "flare_job"
SITES = ["site-1", "site-2", "site-3"]
HEARTBEAT_TIMEOUT_S = 20  # a killed site is dropped after this (FLARE's default is 600 s)


def tiny_recipe(
    name: str, *, rounds: int, initial_ckpt: Path | None = None, delay_s: float = 0.0
) -> FedAvgRecipe:
    """FedAvg over every site; the job itself tolerates fewer (see ``export_job(min_sites=)``)."""
    recipe = FedAvgRecipe(
        name=name,
        model={"class_path": "tiny_model.TinyNet", "args": {}},
        initial_ckpt=str(initial_ckpt) if initial_ckpt else None,
        min_clients=len(SITES),
        num_rounds=rounds,
        train_script=str(JOB_CODE / "tiny_train.py"),
        train_args=f"--delay {delay_s}",
    )
    # a dead site's task times out 2 s after FLARE deems it gone (defaults: 60 s and 30 s)
    recipe.add_server_config({"dead_client_grace_period": 2.0, "dead_client_check_lead_time": 2.0})
    return recipe


def site_rows(consortium: LocalConsortium, job_id: str) -> list[dict[str, Any]]:
    rows = []
    for kit in consortium.kits.sites.values():
        path = kit / "pair_site_metrics.jsonl"
        if path.exists():
            rows += [
                r for r in map(json.loads, path.read_text().splitlines()) if r["job"] == job_id
            ]
    return rows


def hub_round_metrics(result_dir: Path | None) -> list[dict[str, Any]]:
    assert result_dir is not None, "the job result was not downloaded"
    (path,) = result_dir.glob("**/metrics/round_metrics.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalConsortium]:
    workdir = tmp_path_factory.mktemp("flare")
    env = {"PYTHONPATH": os.pathsep.join([str(JOB_CODE), os.environ.get("PYTHONPATH", "")])}
    with running_consortium(
        workdir,
        SITES,
        env=env,
        extra_classes=("tiny_model.",),
        heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
    ) as running:
        yield running
        pids = running.processes.all_pids()
    assert len(pids) > 4
    assert not [pid for pid in pids if _running(pid)], "every FLARE process started must be stopped"


@pytest.fixture(scope="module")
def first_run(
    consortium: LocalConsortium, tmp_path_factory: pytest.TempPathFactory
) -> tuple[JobOutcome, float]:
    jobs = tmp_path_factory.mktemp("jobs")
    job = export_job(tiny_recipe("pair-tiny", rounds=2), jobs)
    polls: list[str] = []
    start = time.monotonic()
    outcome = run_job(
        consortium.lead_kit,
        job,
        jobs / "results",
        timeout_s=150,
        on_poll=lambda meta: polls.append(str(meta.get("status"))),
        check=consortium.processes.check_alive,
    )
    assert "RUNNING" in polls
    return outcome, time.monotonic() - start


def test_server_listens_on_loopback_only(consortium: LocalConsortium) -> None:
    log = (consortium.kits.server / "log.txt").read_text()
    listeners = [line for line in log.splitlines() if "creating listener on" in line]
    assert listeners
    assert all("://127.0.0.1:" in line for line in listeners), listeners


def test_job_completes_with_per_site_metrics(
    consortium: LocalConsortium, first_run: tuple[JobOutcome, float]
) -> None:
    outcome, seconds = first_run
    assert outcome.status == COMPLETED, outcome.status
    assert outcome.result_dir is not None
    rounds = hub_round_metrics(outcome.result_dir)
    assert [r["round"] for r in rounds] == [0, 1]
    for r in rounds:  # the hub received each site's metrics in each round
        assert sorted(s["name"] for s in r["sites"]) == SITES
    rows = site_rows(consortium, outcome.job_id)
    assert sorted((r["site"], r["round"]) for r in rows) == [(s, n) for s in SITES for n in (0, 1)]
    assert last_global_model(outcome.result_dir).stat().st_size > 0
    assert seconds < 150


def test_custom_code_is_not_shipped_and_is_refused(
    consortium: LocalConsortium, tmp_path: Path
) -> None:
    job = export_job(tiny_recipe("pair-tiny", rounds=1), tmp_path)
    assert not list(job.glob("**/custom")), "a PAIR job must carry configuration only (byoc: none)"
    byoc = export_job(tiny_recipe("pair-tiny", rounds=1), tmp_path / "byoc", allow_custom_code=True)
    assert list(byoc.glob("**/custom/**/tiny_train.py"))
    outcome = run_job(consortium.lead_kit, byoc, tmp_path / "results", timeout_s=60)
    assert outcome.status == "FINISHED:FAILED_TO_RUN"
    assert "BYOC not permitted" in _read(consortium.kits.server / "log.txt")


def test_only_leads_may_submit(consortium: LocalConsortium, tmp_path: Path) -> None:
    job = export_job(tiny_recipe("pair-tiny", rounds=1), tmp_path)
    with (
        FlareAdmin(consortium.kits.admins[OPERATOR]) as operator,
        pytest.raises(DeploymentError, match="refused"),
    ):
        operator.submit(job)


def test_lead_of_another_provisioning_cannot_log_in(
    consortium: LocalConsortium, tmp_path: Path
) -> None:
    foreign = provision(_same_endpoint(consortium, SITES), tmp_path)
    with pytest.raises(DeploymentError, match="cannot log in"):
        FlareAdmin(foreign.admins["lead@pair.local"], connect_timeout_s=5)


def test_unprovisioned_client_is_refused(consortium: LocalConsortium, tmp_path: Path) -> None:
    foreign = provision(_same_endpoint(consortium, ["site-9"]), tmp_path).sites["site-9"]
    forged = provision(_same_endpoint(consortium, ["site-9"]), tmp_path / "forged").sites["site-9"]
    # the forged kit trusts the real root CA, but its own certificate is signed by another CA
    shutil.copy(
        consortium.kits.server / "startup" / "rootCA.pem", forged / "startup" / "rootCA.pem"
    )
    with FlareProcesses() as rogue:
        rogue.start("foreign", foreign)
        rogue.start("forged", forged)
        deadline = time.monotonic() + 40
        while "CertificateError" not in _read(foreign / "log.txt") and time.monotonic() < deadline:
            time.sleep(1)
        assert "SSLCertVerificationError" in _read(foreign / "log.txt")
        with FlareAdmin(consortium.lead_kit) as admin:
            assert admin.connected_sites() == SITES
    assert all(not p.alive() for p in rogue.started.values())


def test_resumed_study_survives_a_site_going_down(
    consortium: LocalConsortium, first_run: tuple[JobOutcome, float], tmp_path: Path
) -> None:
    """Resume from the first study's global model with min sites 2, and kill site-3 while round
    0 is open: FLARE drops the site, times its task out and finishes on the other two."""
    outcome, _ = first_run
    checkpoint = tmp_path / "resume.pt"
    assert outcome.result_dir is not None
    shutil.copy(last_global_model(outcome.result_dir), checkpoint)
    state = torch.load(checkpoint, weights_only=False)["model"]
    expected = hashlib.sha256(
        b"".join(state[k].float().contiguous().numpy().tobytes() for k in sorted(state))
    )
    recipe = tiny_recipe("pair-tiny-resume", rounds=2, initial_ckpt=checkpoint, delay_s=4.0)
    job = export_job(recipe, tmp_path, min_sites=2)
    site_3 = consortium.processes.started["site-3"]
    killed: list[int] = []

    def kill_site_3_once_running(meta: dict[str, object]) -> None:
        if meta.get("status") == "RUNNING" and not killed:
            time.sleep(3.0)
            site_3.refresh_descendants()
            killed.extend([site_3.pid, *site_3.descendants])
            consortium.processes.kill("site-3")

    resumed = run_job(
        consortium.lead_kit,
        job,
        tmp_path / "results",
        timeout_s=150,
        on_poll=kill_site_3_once_running,
    )
    assert len(killed) > 1, "site-3 had started its job process when it was killed"
    assert not [pid for pid in killed if _running(pid)]
    assert resumed.status == COMPLETED, resumed.status
    rounds = hub_round_metrics(resumed.result_dir)
    assert [r["round"] for r in rounds] == [0, 1]
    for r in rounds:
        assert sorted(s["name"] for s in r["sites"]) == ["site-1", "site-2"]
    assert "Remove the dead Client. Name: site-3" in _read(consortium.kits.server / "log.txt")
    received = {r["received_sha"] for r in site_rows(consortium, resumed.job_id) if r["round"] == 0}
    assert received == {expected.hexdigest()}, (
        "round 0 must start from the previous study's global model"
    )


def _same_endpoint(consortium: LocalConsortium, sites: list[str]) -> Consortium:
    """Another provisioning (its own root CA) pointing at the running server's ports."""
    admin = json.loads((consortium.lead_kit / "startup" / "fed_admin.json").read_text())["admin"]
    server = json.loads((consortium.kits.server / "startup" / "fed_server.json").read_text())
    fed_port = int(server["servers"][0]["service"]["target"].rsplit(":", 1)[1])
    return dataclasses.replace(
        loopback_consortium(sites), fed_learn_port=fed_port, admin_port=int(admin["port"])
    )


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
