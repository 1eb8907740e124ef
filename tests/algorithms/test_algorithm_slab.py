"""2.5D slab packages: manifest rules, slice order and slab building, the sandboxed runner."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pair.algorithms import service
from pair.algorithms.manifest import Manifest, parse_manifest_text
from pair.algorithms.package import PackageRejected
from pair.algorithms.preprocess import (
    PreprocessError,
    preprocess_dataset,
    preprocess_slabs,
    slab_indices,
    slice_order,
)
from pair.algorithms.runner import Case, run_inference
from pair.audit.service import Actor
from pair.cli.main import app as cli_app
from pair.core.config import AlgorithmSettings
from pair.core.node import Node
from tests.algorithms.algo_builders import (
    BASE_MANIFEST,
    load_algorithm,
    mean_model,
    write_package,
)
from tests.algorithms.slab_builders import (
    SLAB_WEIGHTS,
    ct_series,
    read_all,
    slab_manifest,
    weighted_mean_model,
)
from tests.factories import ct_instance

ACTOR = Actor.system("test")
FAST = AlgorithmSettings(case_timeout_s=10, load_timeout_s=30, memory_limit_mb=1536)


def _problems(m: dict[str, object]) -> list[str]:
    parsed, _raw, problems = parse_manifest_text(yaml.safe_dump(m))
    assert parsed is None
    return problems


def test_slab_manifest_rules() -> None:
    ok = Manifest.model_validate(slab_manifest(5, step=2))
    assert ok.input.slab is not None and ok.input.slab.edges.value == "replicate"
    assert "slabs of 5 slices (step 2)" in ok.input.describe()
    assert _problems({**slab_manifest(3), "modality": ["CR", "DX"]}) == [
        "pair-algorithm.yaml: (manifest): input.slab (2.5D) needs a CT series: modality must "
        "be [CT], got [CR, DX]"
    ]
    assert _problems(slab_manifest(5, channels=3)) == [
        "pair-algorithm.yaml: input: channels must equal slab.slices (5) for a slab input: "
        "each slice is one channel; got 3"
    ]
    (even,) = _problems(slab_manifest(4))
    assert even == (
        "pair-algorithm.yaml: input.slab: slab.slices must be odd (a slab is centred on one "
        "slice); got 4"
    )
    cr = {**BASE_MANIFEST, "input": {**BASE_MANIFEST["input"], "channels": 5}}
    assert _problems(cr) == [
        "pair-algorithm.yaml: input: channels must be 1 or 3 (grey value replicated); got 5 "
        "(more channels only with input.slab, a 2.5D CT slab)"
    ]
    (step,) = _problems(slab_manifest(3, step=0))
    assert step.startswith("pair-algorithm.yaml: input.slab.step: Input should be greater")
    # without a slab nothing changes: the manifest dumps exactly as before slabs existed
    plain = Manifest.model_validate(BASE_MANIFEST).model_dump(mode="json")
    assert "slab" not in plain["input"]


def test_slice_order_by_position_then_instance_number(tmp_path: Path) -> None:
    # Instance Number 1..5, positions deliberately not in that order
    z = [3.0, -1.0, 7.5, 0.0, 5.0]
    datasets = read_all(ct_series(tmp_path / "s", 5, positions=z))
    numbers = [int(ds.InstanceNumber) for ds in datasets]
    by_position = [int(datasets[i].InstanceNumber) for i in slice_order(datasets)]
    assert by_position == [2, 4, 1, 5, 3] and numbers != by_position
    # a tilted gantry: the normal of the orientation, not z, decides
    for ds in datasets:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # normal (0, 1, 0)
        ds.ImagePositionPatient = [0.0, float(-int(ds.InstanceNumber)), 0.0]
    assert [int(datasets[i].InstanceNumber) for i in slice_order(datasets)] == [5, 4, 3, 2, 1]
    del datasets[0].ImagePositionPatient  # no position on one slice: Instance Number order
    assert [int(datasets[i].InstanceNumber) for i in slice_order(datasets)] == sorted(numbers)


def test_slab_indices_replicate_the_ends() -> None:
    assert slab_indices(6, 0, 3, 1) == [0, 0, 1]
    assert slab_indices(6, 5, 3, 1) == [4, 5, 5]
    assert slab_indices(6, 2, 5, 2) == [0, 0, 2, 4, 5]
    assert slab_indices(1, 0, 5, 1) == [0, 0, 0, 0, 0]


def test_slabs_are_per_slice_preprocessing_stacked(tmp_path: Path) -> None:
    m = Manifest.model_validate(slab_manifest(3))
    one = Manifest.model_validate(
        {**slab_manifest(3), "input": {**slab_manifest(3)["input"], "channels": 1, "slab": None}}
    )
    datasets = read_all(ct_series(tmp_path / "s", 4, positions=[10.0, 0.0, 30.0, 20.0]))
    batch = preprocess_slabs(datasets, m.input)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == np.float32
    single = [preprocess_dataset(ds, one.input)[0, 0] for ds in datasets]
    # slice order along z: index 1 (z 0), 0 (10), 3 (20), 2 (30)
    expect = {0: (1, 0, 3), 1: (1, 1, 0), 3: (0, 3, 2), 2: (3, 2, 2)}
    for centre, (a, b, c) in expect.items():
        assert np.array_equal(batch[centre], np.stack([single[a], single[b], single[c]]))
    nhwc = Manifest.model_validate(slab_manifest(3, layout="NHWC"))
    assert np.array_equal(preprocess_slabs(datasets, nhwc.input), batch.transpose(0, 2, 3, 1))
    multi = ct_instance(study_uid="1.2", series_uid="1.3", index=1)
    multi.NumberOfFrames = 2
    multi.PixelData = multi.PixelData * 2
    with pytest.raises(PreprocessError, match="multi-frame instance"):
        preprocess_slabs([multi], m.input)


def test_runner_one_inference_per_slab_aggregated_and_cached(tmp_path: Path) -> None:
    alg = load_algorithm(write_package(tmp_path / "pkg", slab_manifest(3), weighted_mean_model()))
    paths = ct_series(tmp_path / "s", 5, positions=[4.0, 0.0, 2.0, 1.0, 3.0])
    cache = tmp_path / "cache"
    (r,) = run_inference(alg, [Case("series", paths)], cache, None, FAST)
    assert r.ok and r.n_images == 5 and not r.cached, r
    batch = preprocess_slabs(read_all(paths), alg.manifest.input)
    w = np.asarray(SLAB_WEIGHTS)
    expected = batch.mean(axis=(2, 3)) @ w
    assert np.allclose([v[1] for v in r.per_instance], expected, atol=1e-5)  # [absent, present]
    assert r.score == pytest.approx(float(expected.max()), abs=1e-5)  # aggregation max
    (again,) = run_inference(alg, [Case("series", paths)], cache, None, FAST)
    assert again.cached and again.per_instance == r.per_instance
    # one slice fewer: every slab near it changes, so nothing of the series is replayed
    (shorter,) = run_inference(alg, [Case("series", paths[:4])], cache, None, FAST)
    assert shorter.ok and not shorter.cached and shorter.n_images == 4
    cr = tmp_path / "cr.dcm"
    ds = ct_instance(study_uid="1.2", series_uid="1.3", modality="CR")
    ds.save_as(cr, enforce_file_format=True)
    (wrong,) = run_inference(alg, [Case("mixed", [*paths[:2], cr])], None, None, FAST)
    assert wrong.error == "wrong modality" and "CR is not one of CT" in wrong.message


def test_slab_package_registers_with_its_smoke_run(sqlite_node: Node, tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "pkg", slab_manifest(3), weighted_mean_model())
    with sqlite_node.db.session() as s:
        sub = service.submit_algorithm(s, sqlite_node, pkg, ACTOR, FAST)
        assert sub.created
    with sqlite_node.db.session() as s:
        loaded = service.load_algorithm(sqlite_node, service.get_algorithm(s, "test-ct-slab"))
        assert loaded.manifest.input.slab is not None
    # a slab manifest over a one-channel model: the graph contract check names the mismatch
    bad = write_package(tmp_path / "bad", {**slab_manifest(3), "version": "1.0.1"}, mean_model())
    with pytest.raises(PackageRejected) as err, sqlite_node.db.session() as s:
        service.submit_algorithm(s, sqlite_node, bad, ACTOR, FAST)
    assert any("channels 3" in p for p in err.value.problems), err.value.problems


def test_cli_runs_a_slab_package_per_series(tmp_path: Path) -> None:
    runner = CliRunner()
    d = str(tmp_path / "node")
    pkg = write_package(tmp_path / "pkg", slab_manifest(3), weighted_mean_model())
    assert runner.invoke(cli_app, ["algorithm", "add", "--data-dir", d, str(pkg)]).exit_code == 0
    ct_series(tmp_path / "ct" / "a", 4)
    ct_series(tmp_path / "ct" / "b", 3)
    out = tmp_path / "results.csv"
    args = ["algorithm", "run", "--data-dir", d, "test-ct-slab", str(tmp_path / "ct")]
    r = runner.invoke(cli_app, [*args, "--out", str(out)])  # default: one case per series
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert sorted(row["n_images"] for row in rows) == ["3", "4"]
    assert all(row["error"] == "" for row in rows)
    refused = runner.invoke(cli_app, [*args, "--group", "instance"])
    assert refused.exit_code != 0
    said = " ".join(refused.output.split())  # the console wraps long lines
    assert "takes one CT series per case; --group instance is not possible" in said
