"""Multiclass evaluation runs end to end: a 4-class ONNX model on the 48 shared radiographs,
with the RSNA chest radiograph report category and a class-name label CSV as truth.

Every number is checked against scikit-learn on the run's own case table, and the case table
against the runner, so the pipeline adds nothing to the statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from pair.algorithms import service as algorithms
from pair.algorithms.manifest import OutputClass
from pair.algorithms.runner import Case, run_inference
from pair.audit.service import Actor
from pair.cli.main import app as cli_app
from pair.core.errors import Invalid
from pair.core.node import Node, open_node
from pair.evaluation import feedback as fb
from pair.evaluation.evaluate_multiclass import evaluate_classes
from pair.evaluation.report.render import render_html
from pair.evaluation.result import MulticlassResult
from pair.evaluation.runs import service
from pair.evaluation.runs.models import EvaluationRun
from pair.evaluation.runs.multiclass import label_classes
from pair.evaluation.runs.rows import GROUP_COLUMNS, CaseRow
from pair.evaluation.runs.truth import map_label_csv
from pair.repository.models import Instance, Series
from tests.evaluation.runs.evalrun_data import DEMO_DIR, NodeData, ingest_shared_images, label_csv
from tests.evaluation.runs.multiclass_data import (
    ALGO_ID,
    CLASSES,
    NAMES,
    category_package,
    study_label_csv,
    write_reports,
)
from tests.web.test_pages import sign_in

TOL = 1e-6
CLASSES_BY_NAME = {c["name"]: c for c in CLASSES}


PASSWORD = "multiclass evaluation 2026"


def _setup(
    node: Node, shared_data: Path, tmp_path: Path, password: str | None = None
) -> tuple[NodeData, Actor]:
    data = ingest_shared_images(node, shared_data, tmp_path, password)
    actor = Actor(None, "eva", data.facility_id, "evaluator", "test")
    with node.db.session() as s:
        algorithms.add_algorithm(s, node, category_package(tmp_path / "pkg"), actor)
        algorithms.add_algorithm(s, node, DEMO_DIR, actor)
    return data, actor


def _check_against_sklearn(result: MulticlassResult, cases: list[dict[str, object]]) -> None:
    y = np.array([c["y"] for c in cases], dtype=np.int64)
    probs = np.array([c["probs"] for c in cases], dtype=np.float64)
    pred = probs.argmax(axis=1)
    labels = list(range(len(NAMES)))
    cm = confusion_matrix(y, pred, labels=labels)
    e = result.evaluation
    assert e.classes == NAMES
    assert np.array_equal(np.array(e.confusion), cm)
    assert e.accuracy.value == pytest.approx(float(np.mean(y == pred)), abs=TOL)
    auc = roc_auc_score(y, probs, multi_class="ovr", average=None, labels=labels)
    for i, pc in enumerate(e.per_class):
        assert pc.auc is not None and pc.auc.value == pytest.approx(auc[i], abs=TOL)
        assert pc.auc.lower is not None and pc.auc.lower <= pc.auc.value <= (pc.auc.upper or 1)
        tp = cm[i, i]
        assert pc.sensitivity.value == pytest.approx(tp / cm[i].sum(), abs=TOL)
        tn = cm.sum() - cm[i].sum() - cm[:, i].sum() + tp
        assert pc.specificity.value == pytest.approx(tn / (cm.sum() - cm[i].sum()), abs=TOL)
        if cm[:, i].sum():
            assert pc.ppv.value == pytest.approx(tp / cm[:, i].sum(), abs=TOL)
        else:
            assert pc.ppv.value is None  # class never predicted: PPV undefined
        assert pc.npv is not None
        assert pc.npv.value == pytest.approx(tn / (cm.sum() - cm[:, i].sum()), abs=TOL)
    assert result.macro_auc == pytest.approx(float(np.mean(auc)), abs=TOL)
    assert e.kappa.value == pytest.approx(cohen_kappa_score(y, pred, labels=labels), abs=TOL)
    assert result.kappa_linear is not None and result.kappa_quadratic is not None
    assert result.kappa_linear.value == pytest.approx(
        cohen_kappa_score(y, pred, labels=labels, weights="linear"), abs=TOL
    )
    assert result.kappa_quadratic.value == pytest.approx(
        cohen_kappa_score(y, pred, labels=labels, weights="quadratic"), abs=TOL
    )
    # subgroups: n, accuracy and (linear weighted: the classes are ordinal) kappa per level
    sex = np.array([c["sex"] or "missing" for c in cases], dtype=object)
    rows = {s.level: s for s in result.subgroups if s.variable == "sex"}
    assert set(rows) == set(sex.tolist())
    for level, row in rows.items():
        m = sex == level
        assert row.n == int(m.sum())
        assert row.accuracy.value == pytest.approx(float(np.mean(y[m] == pred[m])), abs=TOL)
        expected = cohen_kappa_score(y[m], pred[m], labels=labels, weights="linear")
        assert row.kappa is not None and row.kappa.value == pytest.approx(expected, abs=TOL)
        assert row.too_small == bool(row.reasons) and (row.n >= 30 or row.too_small)


def test_multiclass_run_report_and_csv_truth(node: Node, shared_data: Path, tmp_path: Path) -> None:
    data, actor = _setup(node, shared_data, tmp_path)
    categories = write_reports(node, data.facility_id, skip=1)
    with node.db.session() as s:
        by_report = service.create_run(
            s, actor, algorithm=ALGO_ID, cohort="", truth="report:rsna-cxr-covid"
        ).id
        mapped = map_label_csv(
            s,
            data.facility_id,
            study_label_csv(categories, tmp_path / "classes.csv").read_bytes(),
            _classes(s),
        )
        assert set(mapped["studies"].values()) == set(NAMES)  # labels and names both map
        by_csv = service.create_run(
            s, actor, algorithm=ALGO_ID, cohort="modality=CR,DX", truth="csv", labels=mapped
        ).id

    run = service.execute_run(node, by_report)
    assert run.status == "done" and run.failures == []
    assert run.cohort_summary["exclusions"] == {"no final rsna-cxr-covid report": 1}
    result = service.result_of(run)
    assert isinstance(result, MulticlassResult)
    assert result.cohort.n_cases == data.n_images - 1
    assert result.cohort.class_counts == {
        name: sum(1 for c in categories.values() if c == name) for name in NAMES
    }
    cases = run.cases
    assert all(set(c) == CaseRow.__required_keys__ | {"probs"} for c in cases)  # typed rows
    assert all(c["y"] == NAMES.index(categories[str(c["study_uid"])]) for c in cases)
    _check_against_sklearn(result, cases)
    # several images per patient: every interval is the patient-clustered bootstrap, and the
    # stored result is exactly evaluate_classes on the case table (the pipeline adds nothing)
    assert len({c["patient"] for c in cases}) < len(cases)
    assert result.n_boot == 2000 and "cluster bootstrap" in result.evaluation.kappa.method
    expected = evaluate_classes(
        np.array([c["y"] for c in cases]),
        np.array([c["probs"] for c in cases]),
        NAMES,
        class_labels=[c["label"] for c in CLASSES],
        ordinal=True,
        groups={g: np.array([c[g] for c in cases], dtype=object) for g in GROUP_COLUMNS},
        clusters=np.array([c["patient"] for c in cases], dtype=object),
        exclusions={"no final rsna-cxr-covid report": 1},
    )
    stored = {k: v for k, v in (run.result or {}).items() if k != "created_at"}
    assert stored == {
        k: v for k, v in json.loads(expected.model_dump_json()).items() if k != "created_at"
    }

    # The stored probability vectors are the runner's own outputs for the stored files.
    with node.db.session() as s:
        algo = algorithms.load_algorithm(node, algorithms.get_algorithm(s, ALGO_ID))
        files = dict(
            s.execute(
                select(Series.series_uid, Instance.storage_path).join(
                    Instance, Instance.series_pk == Series.id
                )
            ).all()
        )
    direct = {
        r.case_id: r.outputs
        for r in run_inference(
            algo,
            [Case(c["case_id"], [node.settings.storage_dir / files[c["case_id"]]]) for c in cases],
        )
    }
    for c in cases:
        out = direct[c["case_id"]]
        assert out is not None and c["probs"] == [out[n] for n in NAMES]
        assert sum(c["probs"]) == pytest.approx(1.0, abs=1e-9)

    # The same classes from a label CSV: the same statistics.
    csv_run = service.execute_run(node, by_csv)
    csv_result = service.result_of(csv_run)
    assert isinstance(csv_result, MulticlassResult)
    assert csv_run.cohort_summary["exclusions"] == {"not in the label file": 1}
    assert csv_result.evaluation == result.evaluation
    assert csv_result.kappa_linear == result.kappa_linear

    # Report and feedback handle the multiclass result.
    with node.db.session() as s:
        row = service.get_run(s, actor, by_report)
        html = render_html(result, service.report_context(s, row))
        envelope = service.feedback_envelope(node, s, row)
    assert 'id="confusion"' in html and 'id="per-class"' in html and 'id="kappa-linear"' in html
    assert 'id="fig-confusion"' in html and 'id="fig-roc"' in html
    assert "Weighted kappa (linear)" in html and "data:image/png;base64" in html
    fb.validate_envelope(envelope)
    assert fb.verify_signature(envelope, fb.load_key(node.settings.data_dir / "keys/feedback.key"))
    payload = envelope["payload"]
    assert payload["output_kind"] == "multiclass" and "auc" not in payload
    mc = payload["multiclass"]
    assert mc["confusion"] == result.evaluation.confusion and mc["classes"] == NAMES
    assert mc["kappa_linear"]["value"] == result.kappa_linear.value  # type: ignore[union-attr]
    assert [len(c["points"]) for c in mc["roc"]] == [21] * 4
    text = json.dumps(envelope)
    assert not any(str(c["study_uid"]) in text or str(c["case_id"]) in text for c in cases)


def _classes(s: Session) -> list[OutputClass]:
    classes = label_classes(s, ALGO_ID)
    assert classes is not None
    return classes


def test_multiclass_refusals(sqlite_node: Node, shared_data: Path, tmp_path: Path) -> None:
    node = sqlite_node
    data, actor = _setup(node, shared_data, tmp_path)
    with node.db.session() as s:
        classes = _classes(s)
        before = s.scalar(select(func.count()).select_from(EvaluationRun))
        with pytest.raises(
            Invalid,
            match=r"row 2: label 'covid' is not a class of the algorithm \(use one of: "
            r"negative, atypical, indeterminate, typical\); row 3: label '' is not a class",
        ):
            map_label_csv(
                s,
                data.facility_id,
                b"patient_id,label\nhannover:024e7871,covid\nhannover:024e7871,\n",
                classes,
            )
        binary = map_label_csv(
            s, data.facility_id, label_csv(data, tmp_path / "l.csv").read_bytes()
        )
        refusals = {
            "gives binary labels. Use report:MODULE": dict(truth="rt-pcr"),
            "truth source report:rsna-cxr-covid:typical gives binary": dict(
                truth="report:rsna-cxr-covid:typical"
            ),
            r"Cannot compare test-cxr-category@1\.0\.0 \(multiclass, classes negative, atypical, "
            r"indeterminate, typical\) with demo-cxr-opacity@1\.0\.0, which is a binary algorithm: "
            r"a paired multiclass comparison needs the same classes": dict(
                truth="report:rsna-cxr-covid", compare="demo-cxr-opacity"
            ),
            r"compare with the report category as the readers' class, i.e. --compare-report "
            r"MODULE without values \(got 'rsna-cxr-covid:typical'\)": dict(
                truth="report:rsna-cxr-covid", options={"compare_report": "rsna-cxr-covid:typical"}
            ),
            "have no category in report module 'corads'": dict(
                truth="report:rsna-cxr-covid", options={"compare_report": "corads"}
            ),
            r"Algorithm class\(es\) negative, atypical, indeterminate, typical have no category "
            r"in report module 'corads'": dict(truth="report:corads"),
            "No reporting module 'nope'": dict(truth="report:nope"),
            r"Label file has labels \['0', '1'\] that are not classes": dict(
                truth="csv", labels=binary
            ),
        }
        for message, kwargs in refusals.items():
            with pytest.raises(Invalid, match=message):
                service.create_run(s, actor, algorithm=ALGO_ID, cohort="", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(Invalid, match=r"gives class labels, but demo-cxr-opacity@1\.0\.0"):
            service.create_run(
                s, actor, algorithm="demo-cxr-opacity", cohort="", truth="report:rsna-cxr-covid"
            )
        with pytest.raises(Invalid, match=r"compare with the report category as MODULE:VALUE"):
            service.create_run(
                s,
                actor,
                algorithm="demo-cxr-opacity",
                cohort="",
                truth="rt-pcr",
                options={"compare_report": "rsna-cxr-covid"},
            )
        with pytest.raises(Invalid, match=r"Cannot compare a binary algorithm with test-cxr-cat"):
            service.create_run(
                s, actor, algorithm="demo-cxr-opacity", compare=ALGO_ID, cohort="", truth="rt-pcr"
            )
        with pytest.raises(Invalid, match=r"Label file has class labels \['typical'\]"):
            service.create_run(
                s,
                actor,
                algorithm="demo-cxr-opacity",
                cohort="",
                truth="csv",
                labels={"series": {}, "studies": {"x": "typical"}, "patients": {}},
            )
        assert s.scalar(select(func.count()).select_from(EvaluationRun)) == before

    # A 3-class model (no "atypical"): atypical reports are excluded with the reason; the class
    # is matched by its label ("Typical appearance") and by its CDE-less name otherwise.
    three = [CLASSES_BY_NAME["negative"], CLASSES_BY_NAME["indeterminate"]]
    three.append({"name": "covid_typical", "label": "Typical appearance"})
    with node.db.session() as s:
        algorithms.add_algorithm(
            s, node, category_package(tmp_path / "p3", three, "test-cxr-3class"), actor
        )
    categories = write_reports(node, data.facility_id, skip=0)
    with node.db.session() as s:
        run_id = service.create_run(
            s, actor, algorithm="test-cxr-3class", cohort="", truth="report:rsna-cxr-covid"
        ).id
    run = service.execute_run(node, run_id)
    n_atypical = sum(1 for c in categories.values() if c == "atypical")
    assert run.cohort_summary["exclusions"] == {
        "report category 'atypical' is not a class of the algorithm": n_atypical
    }
    result = service.result_of(run)
    assert isinstance(result, MulticlassResult)
    assert result.cohort.class_counts == {
        "negative": sum(1 for c in categories.values() if c == "negative"),
        "indeterminate": sum(1 for c in categories.values() if c == "indeterminate"),
        "covid_typical": sum(1 for c in categories.values() if c == "typical"),
    }


def test_multiclass_api_page_and_cli(tmp_path: Path, shared_data: Path) -> None:
    from pair.web.app import create_app

    data_dir = tmp_path / "node"
    node = open_node(data_dir)
    try:
        data, _ = _setup(node, shared_data, tmp_path, PASSWORD)
        categories = write_reports(node, data.facility_id, skip=0)
        client = TestClient(create_app(node))
        ev = {"Authorization": f"Bearer {data.evaluator_token}"}
        good = study_label_csv(categories, tmp_path / "c.csv").read_bytes()
        form = {"algorithm": ALGO_ID, "truth": "csv", "cohort": ""}
        bad = client.post(
            "/api/evaluations",
            data=form,
            files={"labels": ("l.csv", b"study_uid,label\n1.2.3,CO-RADS 5\n", "text/csv")},
            headers=ev,
        )
        assert bad.status_code == 422
        assert "label 'CO-RADS 5' is not a class of the algorithm" in bad.json()["message"]
        cmp = client.post(
            "/api/evaluations",
            data={**form, "compare": "demo-cxr-opacity"},
            files={"labels": ("l.csv", good, "text/csv")},
            headers=ev,
        )
        assert cmp.status_code == 422 and "which is a binary algorithm" in cmp.json()["message"]
        r = client.post(
            "/api/evaluations", data=form, files={"labels": ("l.csv", good, "text/csv")}, headers=ev
        )
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        import time

        for _ in range(300):
            body = client.get(f"/api/evaluations/{run_id}", headers=ev).json()
            if body["status"] in ("done", "failed"):
                break
            time.sleep(0.1)
        assert body["status"] == "done", body["error"]
        assert body["result"]["kind"] == "multiclass"
        assert body["result"]["cohort"]["n_cases"] == data.n_images
        html = client.get(f"/api/evaluations/{run_id}/report.html", headers=ev)
        assert html.status_code == 200 and 'id="confusion"' in html.text
        envelope = client.get(f"/api/evaluations/{run_id}/feedback", headers=ev).json()
        fb.validate_envelope(envelope)
        # the portal page shows the confusion matrix and the per-class table
        sign_in(client, "eva", PASSWORD)
        page = client.get(f"/evaluations/{run_id}", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert 'id="confusion"' in page.text and 'id="per-class"' in page.text
        assert "Cohen&#39;s kappa" in page.text or "Cohen's kappa" in page.text
    finally:
        node.close()

    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(
        cli_app,
        [
            "evaluate",
            "--data-dir",
            str(data_dir),
            "--algorithm",
            ALGO_ID,
            "--truth",
            "report:rsna-cxr-covid",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "Cohen's kappa" in r.output and "Confusion matrix" in r.output
    assert "typical" in r.output and "Ordinal classes: linear weighted kappa" in r.output
    assert json.loads((out / "result.json").read_text())["kind"] == "multiclass"
    fb.validate_envelope(json.loads((out / "feedback.json").read_text()))
    assert (out / "figures" / "confusion.png").is_file()
    r = runner.invoke(
        cli_app,
        [
            "evaluate",
            "--data-dir",
            str(data_dir),
            "--algorithm",
            ALGO_ID,
            "--truth",
            "rt-pcr",
            "--compare",
            "demo-cxr-opacity",
        ],
    )
    assert r.exit_code == 2 and "a paired multiclass comparison needs the same" in r.output


def test_multiclass_paired_comparison(sqlite_node: Node, shared_data: Path, tmp_path: Path) -> None:
    """Two 4-class models on the same cases: accuracy (McNemar), kappa and per-class AUC
    differences, checked against scikit-learn and the binary DeLong test on the case table."""
    from pair.evaluation.stats.compare import delong_test

    node = sqlite_node
    data, actor = _setup(node, shared_data, tmp_path)
    three = [CLASSES_BY_NAME["negative"], CLASSES_BY_NAME["indeterminate"]]
    three.append({"name": "typical", "label": "Typical appearance"})
    with node.db.session() as s:
        algorithms.add_algorithm(
            s, node, category_package(tmp_path / "b", algo_id="test-cxr-category-b", seed=8), actor
        )
        algorithms.add_algorithm(
            s, node, category_package(tmp_path / "c", three, "test-cxr-3class"), actor
        )
    categories = write_reports(node, data.facility_id, skip=0)
    with node.db.session() as s:
        with pytest.raises(Invalid, match=r"which has classes negative, indeterminate, typical"):
            service.create_run(
                s,
                actor,
                algorithm=ALGO_ID,
                compare="test-cxr-3class",
                cohort="",
                truth="report:rsna-cxr-covid",
            )
        run_id = service.create_run(
            s,
            actor,
            algorithm=ALGO_ID,
            compare="test-cxr-category-b",
            cohort="",
            truth="report:rsna-cxr-covid",
            options={"n_boot": 200},
        ).id
    run = service.execute_run(node, run_id)
    assert run.total == 2 * data.n_images and run.failures == []
    result = service.result_of(run)
    assert isinstance(result, MulticlassResult) and result.comparison is not None
    cmp = result.comparison
    cases = run.cases
    y = np.array([c["y"] for c in cases])
    pa = np.array([c["probs"] for c in cases])
    pb = np.array([c["probs_compare"] for c in cases])
    assert not np.allclose(pa, pb)
    a, b = pa.argmax(axis=1), pb.argmax(axis=1)
    assert (cmp.name_a, cmp.name_b) == (f"{ALGO_ID}@1.0.0", "test-cxr-category-b@1.0.0")
    assert cmp.accuracy_a == pytest.approx(np.mean(a == y), abs=TOL)
    assert cmp.accuracy_b == pytest.approx(np.mean(b == y), abs=TOL)
    assert (cmp.mcnemar.b, cmp.mcnemar.c) == (
        int(np.sum((a == y) & (b != y))),
        int(np.sum((a != y) & (b == y))),
    )
    assert cmp.kappa_weighting == "linear"
    assert cmp.kappa_a == pytest.approx(cohen_kappa_score(y, a, weights="linear"), abs=TOL)
    assert cmp.kappa_b == pytest.approx(cohen_kappa_score(y, b, weights="linear"), abs=TOL)
    for i, d in enumerate(cmp.per_class):
        assert d.auc_a == pytest.approx(roc_auc_score(y == i, pa[:, i]), abs=TOL)
        assert d.auc_b == pytest.approx(roc_auc_score(y == i, pb[:, i]), abs=TOL)
        assert d.difference is not None
        assert d.difference.value == pytest.approx(
            delong_test((y == i).astype(int), pa[:, i], pb[:, i]).difference, abs=TOL
        )
        assert "cluster bootstrap" in d.difference.method  # several images per patient
    assert any("McNemar's test assumes independent cases" in w for w in result.warnings)
    with node.db.session() as s:
        row = service.get_run(s, actor, run_id)
        html = render_html(result, service.report_context(s, row))
        envelope = service.feedback_envelope(node, s, row)
    assert 'id="comparison"' in html and 'id="comparison-per-class"' in html
    fb.validate_envelope(envelope)
    sent = envelope["payload"]["multiclass"]["comparison"]
    assert sent["mcnemar_p_value"] == cmp.mcnemar.p_value
    assert [d["name"] for d in sent["auc_differences"]] == NAMES

    # The algorithm against the radiologists' report category (their class), with class labels
    # from a CSV as truth; the reports were written from the same labels, so the readers agree
    # with the truth everywhere.
    with node.db.session() as s:
        mapped = map_label_csv(
            s,
            data.facility_id,
            study_label_csv(categories, tmp_path / "truth.csv").read_bytes(),
            _classes(s),
        )
        reader_run = service.create_run(
            s,
            actor,
            algorithm=ALGO_ID,
            cohort="",
            truth="csv",
            labels=mapped,
            options={"n_boot": 200, "compare_report": "rsna-cxr-covid"},
        ).id
    run = service.execute_run(node, reader_run)
    result = service.result_of(run)
    assert isinstance(result, MulticlassResult) and result.comparison is not None
    cmp = result.comparison
    assert cmp.name_b == "report category (rsna-cxr-covid)"
    assert cmp.accuracy_b == 1.0 and cmp.kappa_b == pytest.approx(1.0)
    assert all(d.auc_b == 1.0 for d in cmp.per_class)
    y = np.array([c["y"] for c in run.cases])
    a = np.array([c["probs"] for c in run.cases]).argmax(axis=1)
    assert (cmp.mcnemar.b, cmp.mcnemar.c) == (0, int(np.sum(a != y)))
    assert all(
        c["probs_compare"] == [float(i == c["y"]) for i in range(len(NAMES))] for c in run.cases
    )
