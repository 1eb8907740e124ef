"""Closed loop for a 2.5D CT study: slab training data from a node, a tiny trained model
exported with a slab manifest, registered (sandboxed smoke run) and evaluated on CT series.

Training uses the engine-agnostic core directly (no FLARE: the export only needs a state dict).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

from pair.accounts import service as accounts
from pair.accounts.models import Facility
from pair.algorithms import service as algorithms
from pair.algorithms.preprocess import preprocess_slabs, slice_order
from pair.algorithms.runner import Case, run_inference
from pair.audit.service import Actor
from pair.clinical.csvimport import import_csv
from pair.core.node import Node
from pair.evaluation.runs import service as runs
from pair.evaluation.runs.cohort import parse_cohort, select_cohort
from pair.federated.core.data import CT_WINDOW
from pair.federated.core.site import build_model
from pair.federated.core.train import TrainConfig, get_state, local_train, predict, seed_everything
from pair.federated.export import manifest_for, write_package
from pair.federated.site_data import site_data_from_node
from pair.federated.study import Study, example_studies, load_study
from pair.repository.ingest import Payload, ingest_batch
from tests.algorithms.slab_builders import ct_series

COHORT = "modality=CT;covid19_positive=Yes,No"
PATIENTS = 8
SLICES_PER_SERIES = 6


def _study() -> Study:
    path = next(p for p in example_studies() if p.name == "covid-ct-fedopt-25d.yaml")
    base = load_study(path).to_dict()
    return Study.model_validate(
        {
            **base,
            "input": {"modality": "CT", "size": 32, "slices": 3},
            "model": {"architecture": "cnn25d", "width": 4},
            "sites": [{"name": "site-1", "cohort": COHORT}, {"name": "site-2", "cohort": COHORT}],
            "training": {**base["training"], "rounds": 1, "batch_size": 4, "min_sites": 1},
        }
    )


def _ingest_ct(node: Node, tmp_path: Path) -> int:
    with node.db.session() as s:
        facility_id = accounts.create_facility(s, "General Hospital").id
    actor = Actor.system("test", facility_id)
    payloads, labels = [], {}
    for p in range(PATIENTS):
        pid, positive = f"CT{p:04d}", p % 2 == 1
        labels[pid] = positive
        paths = ct_series(
            tmp_path / "dicom" / pid,
            SLICES_PER_SERIES,
            positions=[float(-5 * k) for k in range(SLICES_PER_SERIES)],  # feet first
            bright=0.35 if positive else 0.0,
            patient={"PatientID": pid, "PatientName": f"TEST^{p}"},
        )
        payloads += [Payload(data=f.read_bytes(), label=f.name) for f in paths]
    results = ingest_batch(node, facility_id, payloads, "test", actor)
    assert all(r.accepted for r in results), [r for r in results if not r.accepted]
    clinical = tmp_path / "clinical.csv"
    with clinical.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "covid19_positive"])
        w.writerows([pid, "Yes" if y else "No"] for pid, y in labels.items())
    with node.db.session() as s:
        res = import_csv(s, s.get(Facility, facility_id), clinical, actor)
        assert res.committed and res.imported == PATIENTS, res.errors
    return facility_id


def test_25d_model_exports_registers_and_evaluates_on_ct_series(
    sqlite_node: Node, tmp_path: Path
) -> None:
    node, study = sqlite_node, _study()
    facility_id = _ingest_ct(node, tmp_path)
    with node.db.session() as s:
        data, skipped = site_data_from_node(
            s, node.settings.storage_dir, facility_id, study, "site-1"
        )
        cases = list(select_cohort(s, node.settings.storage_dir, facility_id, parse_cohort(COHORT)))
    assert data.images.shape == (PATIENTS, 3, 32, 32) and skipped == {}
    seed_everything(0)
    model = build_model(study)
    local_train(model, data, TrainConfig(epochs=3, batch_size=4, lr=0.05, seed=0))
    provenance = {"rounds": 1, "engine": "core (test)", "cases": {"site-1": len(data)}}
    folder = write_package(study, get_state(model), tmp_path / "pkg", provenance, "1.0.0")
    manifest = yaml.safe_load((folder / "pair-algorithm.yaml").read_text())
    assert manifest["modality"] == ["CT"]
    assert manifest["input"]["slab"] == {"slices": 3, "step": 1, "edges": "replicate"}
    assert manifest["input"]["channels"] == 3 and manifest["input"]["scaling"] == CT_WINDOW

    actor = Actor.system("test", facility_id)
    with node.db.session() as s:
        sub = algorithms.submit_algorithm(s, node, folder, actor)  # ONNX checks + smoke run
        assert sub.created
        algo = algorithms.load_algorithm(node, sub.algorithm)
    assert algo.manifest.input.slab is not None

    # training inputs are the package's inputs: the slab the site trained on (centred on the
    # series' middle slice) gives, through the sandboxed ONNX runner, the torch model's output
    probs = predict(model, data)
    by_patient = {c.pseudonym: c for c in cases}
    checked = 0
    for k, pseudonym in enumerate(data.patients.tolist()):
        case = by_patient[pseudonym]
        datasets = [pydicom.dcmread(p) for p in case.paths]
        middle = slice_order(datasets)[len(datasets) // 2]
        assert np.array_equal(
            preprocess_slabs(datasets, algo.manifest.input)[middle], data.images[k]
        )
        (r,) = run_inference(algo, [Case(case.case_id, case.paths)], None)
        assert r.ok and r.n_images == SLICES_PER_SERIES, r
        assert r.per_instance[middle][1] == pytest.approx(float(probs[k]), abs=1e-4)
        assert r.score == pytest.approx(max(v[1] for v in r.per_instance), abs=1e-9)
        checked += 1
    assert checked == PATIENTS

    evaluator = Actor(None, "eva", facility_id, "evaluator", "test")
    with node.db.session() as s:
        run_id = runs.create_run(
            s,
            evaluator,
            algorithm=f"{sub.algorithm.algorithm_id}@{sub.algorithm.version}",
            cohort=COHORT,
            truth="rt-pcr",
            options={"n_boot": 50},
        ).id
    run = runs.execute_run(node, run_id)
    assert run.status == "done" and run.failures == [] and run.total == PATIENTS
    result = runs.result_of(run)
    assert result.cohort.n_cases == PATIENTS


def test_one_image_study_manifest_input_is_unchanged() -> None:
    """A CXR study's exported input section is exactly what it was before slabs existed."""
    cxr = Study.model_validate(
        {**_study().to_dict(), "input": {"size": 32}, "model": {"architecture": "small_cnn"}}
    )
    m = manifest_for(cxr, "0" * 64, {"rounds": 1}, "1.0.0")
    assert m["modality"] == ["CR", "DX"]
    assert m["input"] == {
        "tensor_name": "image",
        "layout": "NCHW",
        "dtype": "float32",
        "size": {"height": 32, "width": 32},
        "channels": 1,
        "resampling": "bilinear",
        "scaling": {"kind": "percentile", "lower": 0.5, "upper": 99.5},
        "invert_monochrome1": True,
        "normalization": {"kind": "range", "min": 0.0, "max": 1.0},
        "aggregation": "max",
    }
    slab = manifest_for(_study(), "0" * 64, {"rounds": 1}, "1.0.0")["input"]
    assert slab["slab"] == {"slices": 3, "step": 1, "edges": "replicate"}
    assert {k: v for k, v in slab.items() if k not in ("slab", "channels", "scaling")} == {
        k: v for k, v in m["input"].items() if k not in ("channels", "scaling")
    }
