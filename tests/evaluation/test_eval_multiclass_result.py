"""``evaluate_classes`` (the multiclass result of an evaluation run) against scikit-learn, and
its report, terminal tables and feedback payload."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

from pair.core.errors import Invalid
from pair.evaluation import feedback as fb
from pair.evaluation.evaluate_multiclass import evaluate_classes
from pair.evaluation.report.context import EvaluationContext
from pair.evaluation.report.render import render_html
from pair.evaluation.result import EvaluationResult, MulticlassResult, load_result
from pair.evaluation.task import result_tables, summary_lines

CLASSES = ["1", "2", "3", "4", "5"]  # CO-RADS-like ordinal classes
TOL = 1e-6


def _data(n: int = 300, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), y] += 1.5
    logits[np.arange(n), np.clip(y + 1, 0, len(CLASSES) - 1)] += 0.7  # ordinal confusion
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    sex = rng.choice(np.array(["Female", "Male", None], dtype=object), n, p=[0.5, 0.45, 0.05])
    return y, p, sex


def test_matches_sklearn_and_subgroups() -> None:
    y, p, sex = _data()
    r = evaluate_classes(y, p, CLASSES, ordinal=True, groups={"sex": sex})
    pred = p.argmax(axis=1)
    labels = list(range(len(CLASSES)))
    assert np.array_equal(r.evaluation.confusion, confusion_matrix(y, pred, labels=labels))
    aucs = roc_auc_score(y, p, multi_class="ovr", average=None)
    assert [c.auc.value for c in r.evaluation.per_class if c.auc] == pytest.approx(aucs, abs=TOL)
    assert r.macro_auc == pytest.approx(roc_auc_score(y, p, multi_class="ovr"), abs=TOL)
    assert r.evaluation.kappa.value == pytest.approx(cohen_kappa_score(y, pred), abs=TOL)
    for w, est in (("linear", r.kappa_linear), ("quadratic", r.kappa_quadratic)):
        assert est is not None
        assert est.value == pytest.approx(cohen_kappa_score(y, pred, weights=w), abs=TOL)
        assert est.lower is not None and est.upper is not None
        assert est.lower < est.value < est.upper
    # ROC curves end at (1, 1) and their trapezoid area is the AUC
    for curve in r.roc:
        fpr = np.array([q.fpr for q in curve.points])
        tpr = np.array([q.tpr for q in curve.points])
        assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
        assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) == pytest.approx(
            curve.auc, abs=TOL
        )
    by_level = {s.level: s for s in r.subgroups}
    assert set(by_level) == {"Female", "Male", "missing"}
    for level, row in by_level.items():
        m = np.array([(v or "missing") == level for v in sex])
        assert row.n == m.sum()
        assert row.accuracy.value == pytest.approx(np.mean(y[m] == pred[m]), abs=TOL)
        expected = cohen_kappa_score(y[m], pred[m], labels=labels, weights="linear")
        assert row.kappa is not None and row.kappa.value == pytest.approx(expected, abs=TOL)
    assert by_level["missing"].too_small and not by_level["Female"].too_small
    assert any("Subgroups too small" in w and "sex=missing" in w for w in r.warnings)


def test_nominal_classes_ties_missing_class_and_clusters() -> None:
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    p = np.array([[0.4, 0.4, 0.2]] * 4 + [[0.1, 0.2, 0.7]] * 4)  # ties -> first class
    r = evaluate_classes(
        y, p, ["a", "b", "c"], clusters=np.array(["p1", "p1", "p2", "p2", "p3", "p4", "p5", "p6"])
    )
    assert r.kappa_linear is None and r.kappa_quadratic is None and not r.ordinal
    assert r.cohort.predicted_counts == {"a": 4, "b": 0, "c": 4}
    assert r.evaluation.per_class[2].auc is None and r.macro_auc is None
    assert r.evaluation.per_class[1].ppv.value is None  # never predicted
    text = " ".join(r.warnings)
    assert "No reference case of class(es) c" in text
    assert "8 cases come from 6 patients: all intervals use the patient-clustered" in text
    assert r.n_boot == 2000 and "cluster bootstrap" in r.evaluation.accuracy.method
    assert r.cohort.n_clusters == 6
    with pytest.raises(Invalid, match=r"probabilities must have shape \(8, 3\)"):
        evaluate_classes(y, p[:, :2], ["a", "b", "c"])
    with pytest.raises(Invalid, match=r"class indices 0\.\.2"):
        evaluate_classes(y + 2, p, ["a", "b", "c"])


def _context() -> EvaluationContext:
    return EvaluationContext(
        title="Local evaluation of a CO-RADS model",
        algorithm_id="corads-model",
        algorithm_name="CO-RADS model",
        algorithm_version="1.0.0",
        model_sha256="a" * 64,
        truth_source="Final report corads: its category as the reference class",
    )


def test_report_tables_and_feedback() -> None:
    y, p, sex = _data(120, seed=5)
    r = evaluate_classes(y, p, CLASSES, ordinal=True, groups={"sex": sex})
    again = load_result(json.loads(r.model_dump_json()))
    assert isinstance(again, MulticlassResult) and again == r

    html = render_html(r, _context())
    for marker in ('id="confusion"', 'id="per-class"', 'id="kappa-linear"', 'id="fig-roc"'):
        assert marker in html
    assert 'id="fig-confusion"' in html and 'id="fig-subgroups"' in html
    assert "Confusion matrix: each row is a reference class" in html  # captions in words
    assert "Weighted kappa (quadratic)" in html and "CLAIM" in html

    console = Console(record=True, width=200)
    for t in result_tables(r):
        console.print(t)
    for line in summary_lines(r):
        console.print(line)
    out = console.export_text()
    assert "Confusion matrix" in out and "Cohen's kappa" in out and "linear weighted kappa" in out

    payload = fb.build_feedback_payload(r, _context(), comment="ok")
    assert payload["output_kind"] == "multiclass"
    assert payload["multiclass"]["confusion"] == r.evaluation.confusion
    assert payload["multiclass"]["kappa"]["value"] == r.evaluation.kappa.value
    key = b"k" * 32
    envelope = fb.sign_payload(payload, key, "site-1")
    assert fb.verify_signature(envelope, key)
    # the schema's conditional parts: a multiclass payload carries no binary fields and needs
    # its multiclass block; a binary one (no output_kind) still needs auc and friends
    bad = copy.deepcopy(envelope)
    bad["payload"]["auc"] = None
    with pytest.raises(Invalid, match="schema"):
        fb.validate_envelope(bad)
    bad = copy.deepcopy(envelope)
    del bad["payload"]["multiclass"]
    with pytest.raises(Invalid, match="'multiclass' is a required property"):
        fb.validate_envelope(bad)
    bad = copy.deepcopy(envelope)
    del bad["payload"]["output_kind"]
    with pytest.raises(Invalid, match="'auc' is a required property"):
        fb.validate_envelope(bad)


def test_feedback_cli_reads_a_multiclass_result(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pair.cli.main import app

    y, p, _ = _data(60, seed=2)
    (tmp_path / "result.json").write_text(evaluate_classes(y, p, CLASSES).model_dump_json())
    fb.generate_key(tmp_path / "k.key")
    out = tmp_path / "envelope.json"
    r = CliRunner().invoke(
        app,
        [
            "offline-evaluation",
            "feedback",
            str(tmp_path / "result.json"),
            "--key",
            str(tmp_path / "k.key"),
            "--key-id",
            "site-1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    envelope = json.loads(out.read_text())
    fb.validate_envelope(envelope)
    assert envelope["payload"]["multiclass"]["classes"] == CLASSES


def test_weighted_statistics_equal_sklearn_on_repeated_cases() -> None:
    from pair.evaluation.stats.multiclass_boot import confusion_design, multiclass_stats
    from pair.evaluation.stats.weighted import SortedScores

    y, p, _ = _data(80, seed=11)
    k = len(CLASSES)
    pred = p.argmax(axis=1)
    design = confusion_design(y, pred, k)
    scores = [SortedScores.build((y == i).astype(np.int64), p[:, i]) for i in range(k)]
    counts = np.random.default_rng(4).multinomial(80, np.full(80, 1 / 80), size=3).astype(float)
    w = np.vstack([np.ones(80), counts])
    out = multiclass_stats(w, design, k, ["none", "linear", "quadratic"], scores)
    for b in range(w.shape[0]):
        idx = np.repeat(np.arange(80), w[b].astype(int))
        yy, pp, probs = y[idx], pred[idx], p[idx]
        labels = list(range(k))
        assert out["accuracy"][b] == pytest.approx(np.mean(yy == pp), abs=TOL)
        for weighting in ("none", "linear", "quadratic"):
            expected = cohen_kappa_score(
                yy, pp, labels=labels, weights=None if weighting == "none" else weighting
            )
            assert out[f"kappa:{weighting}"][b] == pytest.approx(expected, abs=TOL)
        cm = confusion_matrix(yy, pp, labels=labels)
        aucs = roc_auc_score(yy, probs, multi_class="ovr", average=None, labels=labels)
        for i in range(k):
            assert out[f"{i}:sensitivity"][b] == pytest.approx(cm[i, i] / cm[i].sum(), abs=TOL)
            assert out[f"{i}:ppv"][b] == pytest.approx(cm[i, i] / cm[:, i].sum(), abs=TOL)
            assert out[f"{i}:auc"][b] == pytest.approx(aucs[i], abs=TOL)


def test_clustered_intervals_are_the_cluster_bootstrap_of_sklearn_statistics() -> None:
    from pair.evaluation.stats.bootstrap import bootstrap_weights

    y, p, _ = _data(60, seed=8)
    clusters = np.array([f"p{i // 3}" for i in range(60)], dtype=object)  # 3 cases per patient
    r = evaluate_classes(y, p, CLASSES, ordinal=True, clusters=clusters, n_boot=60, seed=9)
    plain = evaluate_classes(y, p, CLASSES, ordinal=True)
    assert r.n_boot == 60 and r.seed == 9 and "clustered bootstrap" in r.interval_method
    assert r.evaluation.accuracy.value == plain.evaluation.accuracy.value
    assert r.evaluation.accuracy.lower != plain.evaluation.accuracy.lower
    pred = p.argmax(axis=1)
    accs, kappas, aucs = [], [], []
    rng = np.random.default_rng(9)
    for w in bootstrap_weights(60, 60, rng, clusters=clusters.astype(str)):
        for row in w:
            idx = np.repeat(np.arange(60), row.astype(int))
            accs.append(np.mean(y[idx] == pred[idx]))
            kappas.append(cohen_kappa_score(y[idx], pred[idx], weights="linear"))
            ref = y[idx] == 0
            aucs.append(roc_auc_score(ref, p[idx, 0]) if 0 < ref.sum() < idx.size else np.nan)
    for est, reps in (
        (r.evaluation.accuracy, accs),
        (r.kappa_linear, kappas),
        (r.evaluation.per_class[0].auc, aucs),
    ):
        assert est is not None and "cluster bootstrap percentile" in est.method
        ok = np.array(reps)[np.isfinite(reps)]
        lo, hi = np.quantile(ok, [0.025, 0.975])
        assert (est.lower, est.upper) == pytest.approx((lo, hi), abs=TOL)


def test_paired_comparison_against_sklearn_and_delong() -> None:
    from pair.evaluation.stats.bootstrap import bootstrap_weights
    from pair.evaluation.stats.compare import delong_test

    y, pa, _ = _data(90, seed=21)
    _, pb, _ = _data(90, seed=22)  # an unrelated second "algorithm" on the same cases
    r = evaluate_classes(
        y, pa, CLASSES, compare_probabilities=pb, names=("A", "B"), n_boot=80, seed=5
    )
    c = r.comparison
    assert c is not None and (c.name_a, c.name_b) == ("A", "B") and c.kappa_weighting == "none"
    a, b = pa.argmax(axis=1), pb.argmax(axis=1)
    assert c.accuracy_difference.value == pytest.approx(np.mean(a == y) - np.mean(b == y))
    assert (c.mcnemar.b, c.mcnemar.c) == (
        int(np.sum((a == y) & (b != y))),
        int(np.sum((a != y) & (b == y))),
    )
    assert c.kappa_a == pytest.approx(cohen_kappa_score(y, a), abs=TOL)
    assert c.kappa_b == pytest.approx(cohen_kappa_score(y, b), abs=TOL)
    for i, d in enumerate(c.per_class):
        dt = delong_test((y == i).astype(int), pa[:, i], pb[:, i])
        assert d.difference is not None and d.difference.method == "delong paired"
        assert (d.difference.value, d.p_value) == pytest.approx((dt.difference, dt.p_value))
        assert d.auc_a == pytest.approx(roc_auc_score(y == i, pa[:, i]), abs=TOL)
    # the kappa-difference interval is the percentile interval of sklearn's kappas on the
    # same case resamples
    diffs = []
    for w in bootstrap_weights(90, 80, np.random.default_rng(5)):
        for row in w:
            idx = np.repeat(np.arange(90), row.astype(int))
            diffs.append(cohen_kappa_score(y[idx], a[idx]) - cohen_kappa_score(y[idx], b[idx]))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    assert (c.kappa_difference.lower, c.kappa_difference.upper) == pytest.approx((lo, hi), abs=TOL)
    assert c.kappa_difference.method == "bootstrap percentile"
    html = render_html(r, _context())
    assert 'id="comparison-per-class"' in html
    fb.validate_envelope(fb.sign_payload(fb.build_feedback_payload(r, _context()), b"k" * 32, "s"))
    with pytest.raises(Invalid, match="compare_probabilities must be finite with shape"):
        evaluate_classes(y, pa, CLASSES, compare_probabilities=pb[:, :3])


def test_load_result_keeps_binary_results() -> None:
    from pair.evaluation.evaluate import evaluate_scores

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.clip(y * 0.3 + rng.random(60) * 0.7, 0, 1)
    res = evaluate_scores(y, s, 0.5, n_boot=50)
    assert isinstance(load_result(json.loads(res.model_dump_json())), EvaluationResult)


def test_calibration_one_vs_rest_and_multiclass_brier_match_sklearn() -> None:
    from sklearn.calibration import calibration_curve
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss

    from pair.evaluation.stats.calibration import logit

    y, p, _ = _data(400, seed=8)
    r = evaluate_classes(y, p, CLASSES, ordinal=True, n_boot=500, seed=4)
    assert r.calibration is not None and r.n_boot == 500
    labels = list(range(len(CLASSES)))
    overall = brier_score_loss(y, p, labels=labels, scale_by_half=False)
    b = r.calibration.brier
    assert b.value == pytest.approx(overall, abs=TOL)
    assert b.lower is not None and b.upper is not None and b.lower < b.value < b.upper
    assert [c.name for c in r.calibration.per_class] == CLASSES
    for i, c in enumerate(r.calibration.per_class):
        ref, prob = (y == i).astype(int), p[:, i]
        cc = c.calibration
        assert cc.brier.value == pytest.approx(brier_score_loss(ref, prob), abs=TOL)
        assert cc.brier.lower is not None and cc.brier.lower < cc.brier.value
        prob_true, prob_pred = calibration_curve(ref, prob, n_bins=10, strategy="uniform")
        assert [x.observed for x in cc.reliability_uniform.bins] == pytest.approx(prob_true)
        assert [x.mean_predicted for x in cc.reliability_uniform.bins] == pytest.approx(prob_pred)
        lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)
        lr.fit(logit(prob)[:, None], ref)
        assert cc.slope.value == pytest.approx(lr.coef_[0, 0], abs=TOL)
        assert cc.intercept.value == pytest.approx(lr.intercept_[0], abs=TOL)
    # the per-class Brier scores add up to the multiclass one
    assert sum(c.calibration.brier.value or 0 for c in r.calibration.per_class) == pytest.approx(
        b.value, abs=TOL
    )
    html = render_html(r, _context())
    assert 'id="calibration-per-class"' in html and 'id="fig-calibration"' in html
    payload = fb.build_feedback_payload(r, _context())
    block = payload["multiclass"]["calibration"]
    assert block["brier"]["value"] == b.value and len(block["per_class"]) == len(CLASSES)
    fb.validate_envelope(fb.sign_payload(payload, b"k" * 32, "site-1"))
    assert any("Multiclass Brier" in line for line in summary_lines(r))


def test_calibration_is_not_assessed_for_scores_that_are_not_probabilities() -> None:
    y, p, _ = _data(100, seed=9)
    r = evaluate_classes(y, p * 3, CLASSES)
    assert r.calibration is None
    assert any("not probabilities" in w for w in r.warnings)
    payload = fb.build_feedback_payload(r, _context())
    assert payload["multiclass"]["calibration"] is None
    fb.validate_envelope(fb.sign_payload(payload, b"k" * 32, "site-1"))


def test_unnormalised_probabilities_get_one_vs_rest_calibration_only() -> None:
    y, p, _ = _data(150, seed=10)
    combined = np.clip(p * 1.3, 0, 1)  # e.g. several images per case combined by max
    r = evaluate_classes(y, combined, CLASSES, n_boot=200)
    assert r.calibration is not None and r.calibration.brier is None
    assert len(r.calibration.per_class) == len(CLASSES)
    assert any("do not sum to 1" in w for w in r.warnings)
    html = render_html(r, _context())
    assert "Multiclass Brier score" not in html and 'id="calibration-per-class"' in html
    payload = fb.build_feedback_payload(r, _context())
    assert payload["multiclass"]["calibration"]["brier"] is None
    fb.validate_envelope(fb.sign_payload(payload, b"k" * 32, "site-1"))
