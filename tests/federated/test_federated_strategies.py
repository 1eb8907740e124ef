"""FedOpt and SCAFFOLD end to end in FLARE's simulator (3 sites × 2 rounds, tiny CNN, synthetic
``pair synth`` radiographs, one torch thread): the job finishes, every site reports every round,
cross-site evaluation covers the global and the local models, and the metrics are stored at the
hub. For SCAFFOLD the sites report the norm of the server control they received: zero in the
first round, non-zero once FLARE has aggregated the sites' control changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from pair.audit.service import Actor
from pair.core.node import Node
from pair.federated import service
from pair.federated.core.synthetic import write_synthetic_sites
from pair.federated.flare.simulate import simulate
from pair.federated.study import Study, parse_study

SITES = ["site-1", "site-2", "site-3"]


def _study(strategy: dict) -> Study:
    return parse_study(
        {
            "schema": "pair-federated-study/1",
            "id": f"sim-{strategy['name']}",
            "use_case": "covid19-cxr",
            "model": {"architecture": "small_cnn", "width": 4},
            "input": {"size": 32},
            "sites": [{"name": s} for s in SITES],
            "strategy": strategy,
            "training": {"rounds": 2, "batch_size": 8, "min_sites": 3, "lr": 0.05, "threads": 1},
        },
        "test",
    )


@pytest.fixture(scope="module")
def site_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_synthetic_sites(tmp_path_factory.mktemp("fl-sites"), 3, 16, 32, seed=0)


@pytest.mark.parametrize(
    "strategy",
    [{"name": "scaffold"}, {"name": "fedopt", "server_lr": 1.0, "server_momentum": 0.6}],
    ids=["scaffold", "fedopt"],
)
def test_strategy_runs_in_simulator_and_is_stored(
    strategy: dict, site_folders: dict[str, Path], sqlite_node: Node, tmp_path: Path
) -> None:
    study = _study(strategy)
    before = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    result = simulate(study, site_folders, tmp_path / "ws")
    left = [p for p in psutil.Process(os.getpid()).children(recursive=True) if p.pid not in before]
    for p in left:  # recorded and stopped, then reported as a failure
        p.kill()
    assert not left, f"simulator left processes: {[p.pid for p in left]}"

    records = service.read_records(result.metrics_path)
    site = [r for r in records if r["kind"] == "site"]
    assert sorted((r["round"], r["site"]) for r in site) == [(r, s) for r in (0, 1) for s in SITES]
    rounds = [r for r in records if r["kind"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert all(r["sites"] == SITES and r["wall_s"] > 0 for r in rounds)
    assert rounds[0]["aggregate_sha256"] != rounds[1]["aggregate_sha256"]
    if strategy["name"] == "scaffold":
        norms = {r["round"]: r["metrics"]["scaffold_c_global_norm"] for r in site}
        assert norms[0] == 0.0 and norms[1] > 0.0
    assert result.global_model_path is not None and result.cross_site_path is not None

    with sqlite_node.db.session() as s:
        row = service.record_run(
            s, study, result.metrics_path, cross_site_path=result.cross_site_path
        )
        pk = row.id
    with sqlite_node.db.session() as s:
        row = service.get_study(s, Actor.system("test"), pk)
        assert row.status == "completed" and row.rounds_done == 2
        assert row.strategy == strategy["name"]
        stored = {(r.round, r.site) for r in row.site_rounds}
        assert stored == {(r, s) for r in (0, 1) for s in SITES}
        assert all(r.val_auc is not None and r.train_samples > 0 for r in row.site_rounds)
        matrix = {(c.model, c.evaluated_on) for c in row.cross_site}
        assert {("global", s) for s in SITES} <= matrix
        assert {(m, s) for m in SITES for s in SITES} <= matrix
