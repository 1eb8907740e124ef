"""AUC, DeLong variance, ROC points and operating points against sklearn, brute force and
the Hanley & McNeil (1982) worked example."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from pair.core.errors import Invalid
from pair.evaluation.stats import roc
from tests.evaluation.eval_reference import brute_delong, hanley_mcneil_data, synthetic


def test_hanley_mcneil_published_example() -> None:
    y, s = hanley_mcneil_data()
    assert (y == 0).sum() == 58 and (y == 1).sum() == 51
    ci = roc.auc_ci_delong(y, s)
    # Published area 0.893 (Hanley & McNeil 1982); exact empirical value 0.8931711.
    assert ci.auc == pytest.approx(0.8931711, abs=1e-7)
    assert round(ci.auc, 3) == 0.893
    assert ci.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # Published SE 0.032 is the Hanley-McNeil exponential-approximation SE.
    assert round(roc.hanley_mcneil_se(ci.auc, 51, 58), 3) == 0.032
    # DeLong SE from the brute-force definition.
    _, cov = brute_delong(y, [s])
    assert ci.se == pytest.approx(np.sqrt(cov[0, 0]), abs=1e-12)
    assert ci.lower == pytest.approx(ci.auc - 1.959963984540054 * ci.se, abs=1e-9)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_delong_equals_brute_force_and_sklearn(seed: int, ties: bool) -> None:
    y, a = synthetic(300, seed, ties)
    rng = np.random.default_rng(seed + 10)
    b = a + rng.normal(scale=0.3, size=a.size)
    if ties:
        b = np.round(b, 1)
    res = roc.fast_delong(y, np.vstack([a, b]))
    aucs, cov = brute_delong(y, [a, b])
    assert res.aucs == pytest.approx(aucs, abs=1e-12)
    assert res.aucs[0] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert res.aucs[1] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert res.covariance == pytest.approx(cov, abs=1e-12)


def test_auc_ci_is_clipped_and_contains_estimate() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    ci = roc.auc_ci_delong(y, s)
    assert ci.auc == 1.0 and ci.upper == 1.0 and ci.lower <= 1.0


def test_roc_curve_matches_sklearn() -> None:
    y, s = synthetic(200, 4, ties=True)
    mine = roc.roc_curve(y, s)
    fpr, tpr, thr = sk_roc_curve(y, s, drop_intermediate=False)
    assert mine.fpr == pytest.approx(fpr, abs=1e-12)
    assert mine.tpr == pytest.approx(tpr, abs=1e-12)
    assert mine.thresholds[1:] == pytest.approx(thr[1:], abs=1e-12)


def test_youden_and_target_sensitivity_by_exhaustive_search() -> None:
    y, s = synthetic(250, 5, ties=True)
    best_j, best_t = -1.0, None
    for t in np.unique(s)[::-1]:
        sens = np.mean(s[y == 1] >= t)
        spec = np.mean(s[y == 0] < t)
        if sens + spec - 1 > best_j + 1e-12:
            best_j, best_t = sens + spec - 1, t
    assert roc.youden_threshold(y, s) == best_t
    t90 = roc.threshold_for_sensitivity(y, s, 0.9)
    assert np.mean(s[y == 1] >= t90) >= 0.9
    higher = np.unique(s)[np.unique(s) > t90]
    assert all(np.mean(s[y == 1] >= t) < 0.9 for t in higher)


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(Invalid, match="both positive and negative"):
        roc.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(Invalid, match="only 0"):
        roc.auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(Invalid, match="missing or infinite"):
        roc.auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(Invalid, match="target sensitivity"):
        roc.threshold_for_sensitivity([0, 1], [0.1, 0.2], 1.5)
