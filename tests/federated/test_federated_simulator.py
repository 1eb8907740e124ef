"""A federated study in NVIDIA FLARE's simulator (3 sites × 2 rounds, tiny CNN, synthetic
``pair synth`` radiographs, one torch thread), its metrics stored at the hub per site and round,
the portal/API views and their authorization, and the closed loop: the global model exported,
registered as an algorithm package, and evaluated on a node's real radiographs.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from pair.accounts import service as accounts
from pair.accounts.models import Facility
from pair.audit.service import Actor
from pair.core.errors import Invalid, NotFound
from pair.core.node import Node
from pair.evaluation.runs import service as runs
from pair.federated import service
from pair.federated.core.synthetic import write_synthetic_sites
from pair.federated.flare.simulate import SimulationResult, simulate
from pair.federated.models import FederatedSiteRound
from pair.federated.site_data import site_data_from_node
from pair.federated.study import Study, parse_study
from pair.repository.models import Instance
from pair.web.app import create_app
from tests.evaluation.runs.evalrun_data import ingest_shared_images

PASSWORD = "Ward7-Lumen-Quartz"
STUDY = parse_study(
    {
        "schema": "pair-federated-study/1",
        "id": "sim-tiny",
        "title": "Simulator test study",
        "use_case": "covid19-cxr",
        "model": {"architecture": "small_cnn", "width": 4},
        "input": {"size": 32},
        "labels": {"source": "clinical", "field": "covid19_positive"},
        "sites": [{"name": "site-1"}, {"name": "site-2"}, {"name": "site-3"}],
        "strategy": {"name": "fedprox", "mu": 0.01},
        "training": {"rounds": 2, "batch_size": 8, "min_sites": 3, "lr": 0.05, "threads": 1},
    },
    "test",
)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulationResult]:
    """One simulator run shared by the tests; every process it started must be gone after."""
    root = tmp_path_factory.mktemp("fl")
    sites = write_synthetic_sites(root / "sites", 3, 16, 32, seed=0)
    before = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    records: list[dict] = []
    result = simulate(STUDY, sites, root / "ws", progress=records.append)
    left = [p for p in psutil.Process(os.getpid()).children(recursive=True) if p.pid not in before]
    for p in left:  # recorded and stopped, then reported as a failure below
        p.kill()
    assert not left, f"simulator left processes: {[p.pid for p in left]}"
    assert [r["kind"] for r in records].count("site") == 6  # progress saw every report
    yield result


def test_simulation_records_every_site_and_round(sim: SimulationResult) -> None:
    records = service.read_records(sim.metrics_path)
    site = [r for r in records if r["kind"] == "site"]
    assert sorted((r["round"], r["site"]) for r in site) == [
        (r, s) for r in (0, 1) for s in ("site-1", "site-2", "site-3")
    ]
    rounds = [r for r in records if r["kind"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert all(r["sites"] == ["site-1", "site-2", "site-3"] for r in rounds)
    assert all(len(r["aggregate_sha256"]) == 64 and r["bytes_per_model"] > 0 for r in rounds)
    assert rounds[0]["aggregate_sha256"] != rounds[1]["aggregate_sha256"]
    for r in site:
        m = r["metrics"]
        assert m["bytes_sent"] == rounds[0]["bytes_per_model"] == r["bytes_received"]
        assert m["train_cases"] + m["val_cases"] == 16
        assert 0.0 <= m["val_auc"] <= 1.0 and m["train_loss"] > 0
        assert 0.0 <= m["local_only_val_auc"] <= 1.0  # the site's local-only baseline
    assert sim.cross_site_path is not None and sim.global_model_path is not None
    assert records[0]["engine"] == "nvflare 2.9.0"


def _study_row(node: Node, sim: SimulationResult, facility: str) -> int:
    with node.db.session() as s:
        row = service.record_run(
            s,
            STUDY,
            sim.metrics_path,
            cross_site_path=sim.cross_site_path,
            site_facilities={"site-1": facility},
        )
        return row.id


def test_metrics_stored_per_site_and_round(
    node: Node, sim: SimulationResult, tmp_path: Path
) -> None:
    with node.db.session() as s:
        f = accounts.create_facility(s, "Site One Hospital")
        accounts.create_facility(s, "Other Hospital")
        fid = f.id
    pk = _study_row(node, sim, "Site One Hospital")
    pk_again = _study_row(node, sim, "Site One Hospital")  # re-import replaces, no duplicates
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(FederatedSiteRound)) == 6
        system = Actor.system("test")
        row = service.get_study(s, system, pk_again)
        assert pk and row.status == "completed" and row.rounds_done == 2
        assert row.site_facilities == {"site-1": fid}
        assert row.digest == STUDY.digest() and row.engine == "nvflare 2.9.0"
        assert {(r.round, r.site) for r in row.site_rounds} == {
            (r, s) for r in (0, 1) for s in STUDY.site_names
        }
        assert all(r.val_auc is not None and r.train_samples > 0 for r in row.site_rounds)
        matrix = {(c.model, c.evaluated_on) for c in row.cross_site}
        assert {("global", s) for s in STUDY.site_names} <= matrix
        assert {(m, s) for m in STUDY.site_names for s in STUDY.site_names} <= matrix
        summary = service.summary(row)
        assert all(p["federated_auc"] is not None for p in summary["per_site"])
        assert all(p["local_only_auc"] is not None for p in summary["per_site"])
        with pytest.raises(Invalid, match="no facility named"):
            service.record_run(s, STUDY, sim.metrics_path, site_facilities={"site-1": "Nope"})
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"kind": "site", "round": 0, "site": "site-9"}\n', encoding="utf-8")
        with pytest.raises(Invalid, match="site-9"):
            service.record_run(s, STUDY, bad, run_name="bad")
        bad.write_text('{"kind": "site", "rou', encoding="utf-8")
        with pytest.raises(Invalid, match="not a JSON metrics line"):
            service.record_run(s, STUDY, bad, run_name="bad")
    with node.db.session() as s:  # refused imports left nothing behind
        assert len(service.list_studies(s, Actor.system("test"))) == 1


def _client(node: Node, facility_id: int, name: str, role: str) -> dict[str, str]:
    with node.db.session() as s:
        facility = s.get(Facility, facility_id)
        assert facility is not None
        user = accounts.create_user(s, facility, name, role, PASSWORD)
        return {"Authorization": f"Bearer {accounts.create_token(s, user, 't')[1]}"}


def test_portal_and_api_visibility(sqlite_node: Node, sim: SimulationResult) -> None:
    node = sqlite_node
    with node.db.session() as s:
        mine = accounts.create_facility(s, "Site One Hospital").id
        other = accounts.create_facility(s, "Other Hospital").id
    pk = _study_row(node, sim, "Site One Hospital")
    client = TestClient(create_app(node))
    evaluator = _client(node, mine, "eva-fl", "evaluator")
    outsider = _client(node, other, "eva-other", "evaluator")
    analyst = _client(node, other, "analyst-fl", "registry-analyst")
    manager = _client(node, mine, "dm-fl", "data-manager")
    listing = client.get("/api/federated/studies", headers=evaluator)
    assert listing.status_code == 200 and [r["id"] for r in listing.json()] == [pk]
    one = client.get(f"/api/federated/studies/{pk}", headers=evaluator).json()
    assert len(one["site_rounds"]) == 6 and one["sites"] == STUDY.site_names
    for name in ("curves", "bars", "matrix", "timing"):
        png = client.get(f"/api/federated/studies/{pk}/figures/{name}", headers=evaluator)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG"), name
    assert (
        client.get(f"/api/federated/studies/{pk}/figures/nope", headers=evaluator).status_code
        == 404
    )
    # another facility's evaluator: the study does not exist for it
    assert client.get("/api/federated/studies", headers=outsider).json() == []
    assert client.get(f"/api/federated/studies/{pk}", headers=outsider).status_code == 404
    assert client.get(f"/api/federated/studies/{pk}", headers=analyst).status_code == 200
    assert client.get("/api/federated/studies", headers=manager).status_code == 403
    page = client.get(f"/federated/{pk}", headers=evaluator)
    assert page.status_code == 200
    assert "Generalizability matrix" in page.text and STUDY.digest() in page.text
    assert client.get(f"/federated/{pk}", headers=outsider).status_code == 404


def test_closed_loop_registered_model_evaluates_on_real_radiographs(
    sqlite_node: Node, sim: SimulationResult, shared_data: Path, tmp_path: Path
) -> None:
    node = sqlite_node
    data = ingest_shared_images(node, shared_data, tmp_path)
    assert sim.global_model_path is not None
    with node.db.session() as s:
        facility = s.get(Facility, data.facility_id)
        assert facility is not None
        row = service.record_run(
            s,
            STUDY,
            sim.metrics_path,
            cross_site_path=sim.cross_site_path,
            site_facilities={"site-1": facility.name},
        )
        algo, version = service.register_global_model(
            s, node, row, STUDY, sim.global_model_path, tmp_path / "export", Actor.system("test")
        )
        assert (algo, version) == ("fl-sim-tiny", f"1.{row.id}.0")
        assert row.algorithm_id == algo
    manifest_text = next(
        (node.settings.data_dir / "algorithms" / algo / version).glob("*.yaml")
    ).read_text()
    assert "sim-tiny v1" in manifest_text and STUDY.digest() in manifest_text
    actor = Actor(None, "eva", data.facility_id, "evaluator", "test")
    with node.db.session() as s:
        run_id = runs.create_run(
            s,
            actor,
            algorithm=f"{algo}@{version}",
            cohort="covid19_positive=Yes,No",
            truth="rt-pcr",
            options={"n_boot": 50},
        ).id
    run = runs.execute_run(node, run_id)
    assert run.status == "done" and run.failures == [] and run.total == data.n_images
    result = runs.result_of(run)
    assert result.cohort.n_cases == data.n_images


def test_site_data_from_node_reads_real_radiographs(
    sqlite_node: Node, shared_data: Path, tmp_path: Path
) -> None:
    node = sqlite_node
    data = ingest_shared_images(node, shared_data, tmp_path)
    study = Study.model_validate(
        {
            **STUDY.to_dict(),
            "sites": [{"name": "site-1", "cohort": "modality=CR,DX;covid19_positive=Yes,No"}],
            "training": {**STUDY.to_dict()["training"], "min_sites": 1},
        }
    )
    with node.db.session() as s:
        before = s.scalar(select(func.count()).select_from(Instance))
        site, skipped = site_data_from_node(
            s, node.settings.storage_dir, data.facility_id, study, "site-1"
        )
        assert s.scalar(select(func.count()).select_from(Instance)) == before
    assert len(site) == data.n_images and skipped == {}
    assert site.images.shape == (data.n_images, 1, 32, 32)
    assert float(site.images.min()) >= 0.0 and float(site.images.max()) <= 1.0
    rows = list(csv.DictReader((shared_data / "labels.csv").open(encoding="utf-8")))
    assert int(site.labels.sum()) == sum(r["label"] == "covid" for r in rows)  # RT-PCR Yes
    assert not set(site.patients) & set(data.labels)  # pseudonyms, never the original keys
    assert np.isfinite(site.images).all()
    with node.db.session() as s, pytest.raises(NotFound):
        service.get_study(s, Actor.system("test"), 12345)


def test_build_recipe_per_strategy() -> None:
    """Every strategy builds, gets cross-site evaluation, and trains every site each round:
    ``min_sites`` gates the start but does not make FLARE sample a subset (FedAvg, FedProx,
    SCAFFOLD) or close a FedOpt round on the first ``min_sites`` results."""
    from nvflare.app_common.workflows.base_fedavg import BaseFedAvg
    from nvflare.app_common.workflows.cross_site_model_eval import CrossSiteModelEval
    from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather

    from pair.federated.flare.recipe import STRAGGLER_GRACE_S, build_recipe

    base = STUDY.to_dict()
    training = {**base["training"], "min_sites": 2}
    for name in ("fedavg", "fedprox", "fedopt", "scaffold"):
        study = parse_study({**base, "strategy": {"name": name}, "training": training}, "t")
        recipe = build_recipe(study, site_data={"site-1": "/srv/site-1"})
        assert type(recipe).__name__.lower().startswith(name)
        flows = [w.controller for w in recipe._job._deploy_map["server"].app_config.workflows]
        assert isinstance(flows[-1], CrossSiteModelEval), name
        trainer = flows[0]
        if name == "fedopt":
            assert isinstance(trainer, ScatterAndGather)
            assert trainer._min_clients == 2
            assert trainer._wait_time_after_min_received == STRAGGLER_GRACE_S
        else:
            assert isinstance(trainer, BaseFedAvg) and trainer.num_clients == 3, name
    # the server builds the same network as the sites (per-image input standardisation too)
    from pair.federated.flare.recipe import _model_config

    normed = parse_study({**base, "model": {**base["model"], "input_norm": "image"}}, "t")
    assert _model_config(normed)["args"]["input_norm"] == "image"
