"""End-to-end ``evaluate_scores``: numbers, interval methods, subgroups, comparison, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, f1_score, roc_auc_score

from pair.core.errors import Invalid
from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.result import EvaluationResult
from pair.evaluation.stats.proportions import wilson_ci
from tests.evaluation.eval_reference import synthetic


@pytest.fixture(scope="module")
def cohort() -> dict[str, np.ndarray]:
    y, p = synthetic(600, 51)
    rng = np.random.default_rng(52)
    return {
        "y": y,
        "p": p,
        "other": np.clip(p + rng.normal(scale=0.25, size=p.size), 0, 1),
        "sex": rng.choice(["F", "M"], p.size),
        "site": np.where(rng.uniform(size=p.size) < 0.03, "tiny", "main"),
    }


def test_main_numbers_match_sklearn(cohort: dict[str, np.ndarray]) -> None:
    y, p = cohort["y"], cohort["p"]
    r = evaluate_scores(y, p, 0.5, n_boot=500, seed=3, prevalence=0.1, target_sensitivity=0.9)
    assert r.auc.value == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert r.auc.method == "delong"
    op = r.operating_point("manifest")
    pred = p >= 0.5
    tp = int(np.sum(pred & (y == 1)))
    assert op.confusion.tp == tp
    assert (op.sensitivity.lower, op.sensitivity.upper) == wilson_ci(tp, int(y.sum()))
    assert op.f1.value == pytest.approx(f1_score(y, pred), abs=1e-12)
    assert op.f1.method == "bootstrap percentile"
    assert op.f1.lower is not None and op.f1.upper is not None
    assert op.f1.lower < op.f1.value < op.f1.upper
    assert op.ppv_at_prevalence is not None and op.ppv_at_prevalence.value is not None
    assert r.calibration is not None
    assert r.calibration.brier.value == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert {o.name for o in r.operating_points} == {"manifest", "youden", "target_sensitivity"}
    assert r.operating_point("target_sensitivity").sensitivity.value >= 0.9
    assert r.operating_point("youden").chosen_on_same_data
    assert len(r.roc) == 101 and r.roc[0].fpr == 0.0 and r.roc[-1].tpr == 1.0
    band = [pt for pt in r.roc if pt.tpr_lower is not None and pt.tpr_upper is not None]
    assert all(pt.tpr_lower <= pt.tpr + 1e-12 <= pt.tpr_upper + 2e-12 for pt in band)


def test_result_is_reproducible_and_json_round_trips(cohort: dict[str, np.ndarray]) -> None:
    kwargs = {"n_boot": 300, "seed": 9, "groups": {"sex": cohort["sex"]}}
    a = evaluate_scores(cohort["y"], cohort["p"], 0.5, **kwargs)  # type: ignore[arg-type]
    b = evaluate_scores(cohort["y"], cohort["p"], 0.5, **kwargs)  # type: ignore[arg-type]
    assert a.auc_bootstrap == b.auc_bootstrap
    text = a.model_dump_json()
    back = EvaluationResult.model_validate_json(text)
    assert back.auc == a.auc and back.subgroups == a.subgroups
    json.loads(text)  # standard JSON (no NaN tokens)
    assert "NaN" not in text


def test_subgroups_flag_small_levels(cohort: dict[str, np.ndarray]) -> None:
    r = evaluate_scores(
        cohort["y"],
        cohort["p"],
        0.5,
        n_boot=200,
        groups={"sex": cohort["sex"], "site": cohort["site"]},
    )
    rows = {(row.variable, row.level): row for row in r.subgroups}
    tiny = rows[("site", "tiny")]
    assert tiny.too_small and any("positives" in x or "width" in x for x in tiny.reasons)
    female = rows[("sex", "F")]
    mask = cohort["sex"] == "F"
    assert female.n == int(mask.sum()) and female.positives == int(cohort["y"][mask].sum())
    assert female.auc is not None
    assert female.auc.value == pytest.approx(
        roc_auc_score(cohort["y"][mask], cohort["p"][mask]), abs=1e-12
    )
    assert not female.too_small
    assert any("site=tiny" in w for w in r.warnings)
    assert r.cohort.groups["site"]["tiny"] == tiny.n


def test_clusters_switch_to_the_clustered_bootstrap(cohort: dict[str, np.ndarray]) -> None:
    y, p = np.repeat(cohort["y"], 3), np.repeat(cohort["p"], 3)
    clusters = np.repeat(np.arange(cohort["y"].size), 3)
    r = evaluate_scores(y, p, 0.5, clusters=clusters, n_boot=400, seed=1)
    assert r.auc.method == "cluster bootstrap percentile"
    assert r.operating_point("manifest").sensitivity.method == "cluster bootstrap percentile"
    assert r.cohort.n_clusters == cohort["y"].size
    assert r.auc.width is not None and r.auc_delong.width is not None
    assert r.auc.width > 1.4 * r.auc_delong.width  # DeLong ignores the triplicated images


def test_comparison_and_bca(cohort: dict[str, np.ndarray]) -> None:
    r = evaluate_scores(
        cohort["y"],
        cohort["p"],
        0.5,
        compare_scores=cohort["other"],
        names=("model-a", "model-b"),
        n_boot=300,
        boot_method="bca",
    )
    assert r.comparison is not None
    assert r.comparison.auc.auc_b == pytest.approx(roc_auc_score(cohort["y"], cohort["other"]))
    assert r.comparison.mcnemar_sensitivity.method in {"exact binomial", "chi-square, continuity"}
    assert r.auc_bootstrap.method == "bootstrap bca"


def test_non_probability_scores_skip_calibration() -> None:
    y, p = synthetic(200, 53)
    r = evaluate_scores(y, p * 10, 5.0, n_boot=100)
    assert r.calibration is None
    assert any("calibration was not assessed" in w for w in r.warnings)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(Invalid, match="both positive and negative"):
        evaluate_scores([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
    with pytest.raises(Invalid, match="threshold must be a finite number"):
        evaluate_scores([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], float("nan"), n_boot=50)
    with pytest.raises(Invalid, match="clusters must be one-dimensional"):
        evaluate_scores([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], 0.5, n_boot=50, clusters=[1, 2])
    with pytest.raises(Invalid, match="group column"):
        evaluate_scores(
            [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], 0.5, n_boot=50, groups={"sex": ["F", "M"]}
        )


def test_clustered_subgroups_and_comparison(cohort: dict[str, np.ndarray]) -> None:
    k = 3  # three identical images per patient
    y, p = np.repeat(cohort["y"], k), np.repeat(cohort["p"], k)
    other, sex = np.repeat(cohort["other"], k), np.repeat(cohort["sex"], k)
    clusters = np.repeat(np.arange(cohort["y"].size), k)
    r = evaluate_scores(
        y, p, 0.5, clusters=clusters, groups={"sex": sex}, compare_scores=other, n_boot=400, seed=2
    )
    naive = evaluate_scores(y, p, 0.5, groups={"sex": sex}, compare_scores=other, n_boot=100)
    for row, ref in zip(r.subgroups, naive.subgroups, strict=True):
        assert row.auc is not None and ref.auc is not None
        assert row.auc.method == "cluster bootstrap percentile"
        assert row.auc.value == ref.auc.value
        assert row.auc.width is not None and ref.auc.width is not None
        assert row.auc.width > 1.3 * ref.auc.width  # sqrt(3) wider in expectation
        assert row.sensitivity.method == "cluster bootstrap percentile"
    assert r.comparison is not None and naive.comparison is not None
    assert r.comparison.auc.difference.method == "cluster bootstrap percentile"
    assert r.comparison.auc.difference.value == pytest.approx(naive.comparison.auc.difference.value)
    assert r.comparison.auc.p_value > naive.comparison.auc.p_value
