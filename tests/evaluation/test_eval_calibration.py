"""Brier, reliability bins/ECE and logistic recalibration against sklearn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from pair.core.errors import Invalid
from pair.evaluation.stats import calibration as cal
from tests.evaluation.eval_reference import synthetic


def test_brier_matches_sklearn() -> None:
    y, p = synthetic(500, 11)
    assert cal.brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
def test_reliability_bins_match_sklearn_calibration_curve(binning: str) -> None:
    y, p = synthetic(700, 12)
    rel = cal.reliability(y, p, 10, binning)  # type: ignore[arg-type]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy=binning)
    assert [b.observed for b in rel.bins] == pytest.approx(prob_true, abs=1e-12)
    assert [b.mean_predicted for b in rel.bins] == pytest.approx(prob_pred, abs=1e-12)
    assert sum(b.n for b in rel.bins) == y.size
    ece = sum(b.n / y.size * abs(b.observed - b.mean_predicted) for b in rel.bins)
    assert rel.ece == pytest.approx(ece, abs=1e-12)
    assert rel.mce == pytest.approx(max(abs(b.observed - b.mean_predicted) for b in rel.bins))


def test_ece_by_hand_on_tiny_example() -> None:
    # Two uniform bins: (0, .5] holds 0.2, 0.4 (outcomes 0, 1); (.5, 1] holds 0.9 (outcome 1).
    y = np.array([0, 1, 1])
    p = np.array([0.2, 0.4, 0.9])
    rel = cal.reliability(y, p, 2, "uniform")
    assert rel.ece == pytest.approx(2 / 3 * abs(0.5 - 0.3) + 1 / 3 * abs(1 - 0.9), abs=1e-12)


def test_slope_and_intercept_match_unpenalised_sklearn() -> None:
    y, p = synthetic(800, 13)
    rec = cal.logistic_calibration(y, p)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(cal.logit(p)[:, None], y)
    assert rec.slope.value == pytest.approx(lr.coef_[0, 0], abs=1e-6)
    assert rec.intercept.value == pytest.approx(lr.intercept_[0], abs=1e-6)
    assert rec.converged
    assert rec.slope.lower < rec.slope.value < rec.slope.upper


def test_calibration_in_the_large_solves_the_offset_score_equation() -> None:
    y, p = synthetic(600, 14)
    lp = cal.logit(p)
    a = optimize.brentq(lambda a: float(np.sum(y - 1 / (1 + np.exp(-(a + lp))))), -10, 10)
    assert cal.logistic_calibration(y, p).calibration_in_the_large.value == pytest.approx(
        a, abs=1e-8
    )


def test_well_calibrated_model_has_slope_near_one() -> None:
    rng = np.random.default_rng(15)
    p = rng.uniform(0.02, 0.98, 20_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    rec = cal.logistic_calibration(y, p)
    assert rec.slope.lower < 1.0 < rec.slope.upper
    assert rec.intercept.lower < 0.0 < rec.intercept.upper


def test_probabilities_outside_unit_interval_are_refused() -> None:
    with pytest.raises(Invalid, match=r"\[0, 1\]"):
        cal.brier_score([0, 1], [0.2, 1.3])
