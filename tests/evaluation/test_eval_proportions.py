"""Wilson intervals, threshold metrics and PPV/NPV at a prevalence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from pair.core.errors import Invalid
from pair.evaluation.stats import proportions as pr
from tests.evaluation.eval_reference import synthetic


@pytest.mark.parametrize(
    ("k", "n", "lower", "upper"),
    [
        # Newcombe (1998), Stat Med 17:857-872, Table I, method 3 (score, no correction);
        # the same four rows are used as reference values in several independent projects.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_table(k: int, n: int, lower: float, upper: float) -> None:
    lo, hi = pr.wilson_ci(k, n)
    assert lo == pytest.approx(lower, abs=5e-5)
    assert hi == pytest.approx(upper, abs=5e-5)


@pytest.mark.parametrize(("k", "n"), [(3, 17), (40, 41), (512, 1000), (7, 9)])
def test_wilson_inverts_the_score_test(k: int, n: int) -> None:
    """The Wilson limits are the p where |p_hat - p| / sqrt(p(1-p)/n) equals z."""
    z = stats.norm.ppf(0.975)
    p_hat = k / n

    def f(p: float) -> float:
        return abs(p_hat - p) / np.sqrt(p * (1 - p) / n) - z

    lo = optimize.brentq(f, 1e-12, p_hat)
    hi = optimize.brentq(f, p_hat, 1 - 1e-12)
    got = pr.wilson_ci(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-9)
    assert got[1] == pytest.approx(hi, abs=1e-9)


def test_wilson_edge_cases() -> None:
    assert pr.wilson_ci(0, 10)[0] == 0.0
    assert pr.wilson_ci(10, 10)[1] == 1.0
    assert all(np.isnan(pr.wilson_ci(0, 0)))
    with pytest.raises(Invalid):
        pr.wilson_ci(11, 10)


def test_threshold_metrics_match_sklearn() -> None:
    y, s = synthetic(400, 7)
    c = pr.confusion_at(y, s, 0.5)
    pred = (s >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert (c.tp, c.fp, c.tn, c.fn) == (tp, fp, tn, fn)
    m = pr.binary_metrics(c)
    assert m.sensitivity.value == pytest.approx(recall_score(y, pred), abs=1e-12)
    assert m.specificity.value == pytest.approx(recall_score(1 - y, 1 - pred), abs=1e-12)
    assert m.ppv.value == pytest.approx(precision_score(y, pred), abs=1e-12)
    assert m.npv.value == pytest.approx(precision_score(1 - y, 1 - pred), abs=1e-12)
    assert m.accuracy.value == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m.f1 == pytest.approx(f1_score(y, pred), abs=1e-12)
    assert (m.sensitivity.lower, m.sensitivity.upper) == pr.wilson_ci(int(tp), int(tp + fn))


def test_ppv_npv_at_prevalence_bayes_and_mercaldo_interval() -> None:
    c = pr.Confusion(tp=90, fp=10, tn=90, fn=10)  # Se = Sp = 0.9
    pv = pr.predictive_values_at_prevalence(c, 0.05)
    assert pv.ppv.value == pytest.approx(0.9 * 0.05 / (0.9 * 0.05 + 0.1 * 0.95), abs=1e-12)
    assert pv.npv.value == pytest.approx(0.9 * 0.95 / (0.9 * 0.95 + 0.1 * 0.05), abs=1e-12)
    # Reference numbers in the evaluation reference: Se = Sp = 0.9 gives PPV 0.32 at 5 %.
    assert round(pv.ppv.value, 2) == 0.32 and round(pv.npv.value, 2) == 0.99
    # Logit interval by hand (Mercaldo et al. 2007, eq. for var(logit PPV)).
    z = stats.norm.ppf(0.975)
    lp = np.log(0.05 / 0.95) + np.log(0.9) - np.log(0.1)
    v = 0.1 / (100 * 0.9) + 0.9 / (100 * 0.1)
    assert pv.ppv.lower == pytest.approx(1 / (1 + np.exp(-(lp - z * np.sqrt(v)))), abs=1e-12)
    assert pv.ppv.upper == pytest.approx(1 / (1 + np.exp(-(lp + z * np.sqrt(v)))), abs=1e-12)
    # At the sample prevalence Bayes gives back the observed PPV.
    same = pr.predictive_values_at_prevalence(c, 0.5)
    assert same.ppv.value == pytest.approx(0.9, abs=1e-12)


def test_ppv_with_zero_cell_uses_adjusted_interval() -> None:
    pv = pr.predictive_values_at_prevalence(pr.Confusion(tp=20, fp=0, tn=30, fn=2), 0.1)
    assert pv.method == "mercaldo-adjusted-logit"
    assert pv.ppv.value == 1.0 and 0 < pv.ppv.lower < 1.0
    with pytest.raises(Invalid):
        pr.predictive_values_at_prevalence(pr.Confusion(1, 1, 1, 1), 1.0)
