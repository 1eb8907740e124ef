"""Weighted statistics, resampling schemes and interval construction."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pair.core.errors import Invalid
from pair.evaluation.stats import bootstrap as bs
from pair.evaluation.stats import roc
from pair.evaluation.stats import weighted as wt
from tests.evaluation.eval_reference import synthetic


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_statistics_with_integer_weights_equal_the_expanded_sample(ties: bool) -> None:
    y, s = synthetic(150, 31, ties)
    rng = np.random.default_rng(32)
    w = rng.integers(0, 4, size=(5, y.size)).astype(float)
    ss = wt.SortedScores.build(y, s)
    aucs = wt.weighted_auc(w, ss)
    grid = np.linspace(0, 1, 21)
    tprs = wt.weighted_tpr_at_fpr(w, ss, grid)
    pred = s >= 0.5
    counts = wt.weighted_counts(w, y, pred)
    for b in range(w.shape[0]):
        idx = np.repeat(np.arange(y.size), w[b].astype(int))
        assert aucs[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
        curve = roc.roc_curve(y[idx], s[idx])
        assert tprs[b] == pytest.approx(roc.interpolate_tpr(curve.fpr, curve.tpr, grid))
        assert counts.tp[b] == np.sum(pred[idx] & (y[idx] == 1))
        assert counts.fn[b] == np.sum(~pred[idx] & (y[idx] == 1))


def test_stratified_weights_keep_class_sizes_and_are_seeded() -> None:
    y = np.r_[np.zeros(30, int), np.ones(12, int)]
    w1 = np.vstack(list(bs.bootstrap_weights(y.size, 300, np.random.default_rng(5), strata=y)))
    w2 = np.vstack(list(bs.bootstrap_weights(y.size, 300, np.random.default_rng(5), strata=y)))
    assert np.array_equal(w1, w2)
    assert np.all(w1[:, y == 1].sum(axis=1) == 12)
    assert np.all(w1[:, y == 0].sum(axis=1) == 30)


def test_cluster_weights_are_constant_within_a_patient() -> None:
    clusters = np.repeat(np.arange(20), 3)
    w = np.vstack(list(bs.bootstrap_weights(60, 100, np.random.default_rng(6), clusters=clusters)))
    per = w.reshape(100, 20, 3)
    assert np.all(per == per[:, :, :1])
    assert np.all(w.sum(axis=1) == 60)


def test_bootstrap_auc_se_agrees_with_delong() -> None:
    y, s = synthetic(600, 33)
    ss = wt.SortedScores.build(y, s)
    run = bs.run_bootstrap(
        lambda w: {"auc": wt.weighted_auc(w, ss)}, y.size, n_boot=2000, seed=1, strata=y
    )
    delong_se = roc.auc_ci_delong(y, s).se
    assert np.std(run.replicates["auc"], ddof=1) == pytest.approx(delong_se, rel=0.1)
    lo, hi = bs.percentile_interval(run.replicates["auc"], 0.95)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(run.replicates["auc"], [0.025, 0.975])))


def test_bca_reduces_to_percentile_without_bias_or_skew() -> None:
    boot = np.linspace(-1, 1, 2001)  # median 0 = estimate, symmetric jackknife
    jack = np.array([-1.0, 1.0])
    assert bs.bca_interval(boot, 0.0, jack, 0.9) == pytest.approx(
        bs.percentile_interval(boot, 0.9), abs=1e-12
    )


def test_clustered_bootstrap_is_wider_for_duplicated_images() -> None:
    y0, s0 = synthetic(200, 34)
    y, s = np.repeat(y0, 4), np.repeat(s0, 4)  # four identical images per patient
    clusters = np.repeat(np.arange(200), 4)
    ss = wt.SortedScores.build(y, s)

    def fn(w: np.ndarray) -> dict[str, np.ndarray]:
        return {"auc": wt.weighted_auc(w, ss)}

    naive = bs.run_bootstrap(fn, y.size, n_boot=1000, seed=2, strata=y)
    clustered = bs.run_bootstrap(fn, y.size, n_boot=1000, seed=2, clusters=clusters)
    ratio = np.std(clustered.replicates["auc"]) / np.std(naive.replicates["auc"])
    assert ratio == pytest.approx(2.0, rel=0.2)  # sqrt(4) wider


def test_run_bootstrap_refuses_tiny_n_boot() -> None:
    with pytest.raises(Invalid):
        bs.run_bootstrap(lambda w: {"x": w.sum(axis=1)}, 10, n_boot=10)
