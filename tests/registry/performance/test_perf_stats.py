"""Random-effects pooling against metafor, an independent computation of the same estimator,
the lower CUSUM on crafted series, and the period a feedback is filed under."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pair.registry.performance.drift import below_minimum, lower_cusum
from pair.registry.performance.meta import dersimonian_laird
from pair.registry.performance.metrics import Reading, logit, on_scale
from pair.registry.performance.receive import period_of

# BCG vaccine trials (Colditz et al. 1994), metafor's dat.bcg: tpos, tneg, cpos, cneg, as listed
# on https://www.metafor-project.org/doku.php/analyses:vanhouwelingen2002 (Table I of
# van Houwelingen et al. 2002).
BCG = [
    (4, 119, 11, 128),
    (6, 300, 29, 274),
    (3, 228, 11, 209),
    (62, 13536, 248, 12619),
    (33, 5036, 47, 5761),
    (180, 1361, 372, 1079),
    (8, 2537, 10, 619),
    (505, 87886, 499, 87892),
    (29, 7470, 45, 7232),
    (17, 1699, 65, 1600),
    (186, 50448, 141, 27197),
    (5, 2493, 3, 2338),
    (27, 16886, 29, 17825),
]


def _log_rr() -> tuple[list[float], list[float]]:
    """escalc(measure="RR"): log relative risk and its large-sample variance."""
    ys, vs = [], []
    for a, b, c, d in BCG:
        ys.append(math.log((a / (a + b)) / (c / (c + d))))
        vs.append(1 / a - 1 / (a + b) + 1 / c - 1 / (c + d))
    return ys, vs


def test_dersimonian_laird_matches_metafor_on_bcg() -> None:
    """metafor tests/testthat/test_misc_metan_vs_rma.uni_with_dat.bcg.r ("RE model w/ DL
    estimator, measure='RR'", checked there against Stata metan): estimate -0.7141, CI
    -1.0644 to -0.3638, tau^2 0.3088, I^2 92.1173 %, and Q = 152.2330 (the EE model's QE)."""
    ys, vs = _log_rr()
    p = dersimonian_laird(ys, vs)
    assert p.k == 13 and p.df == 12
    assert p.estimate == pytest.approx(-0.7141, abs=5e-5)
    assert p.lower == pytest.approx(-1.0644, abs=5e-5)
    assert p.upper == pytest.approx(-0.3638, abs=5e-5)
    assert p.tau2 == pytest.approx(0.3088, abs=5e-5)
    assert p.i2 == pytest.approx(92.1173, abs=5e-4)
    assert p.q == pytest.approx(152.2330, abs=5e-4)
    assert p.estimate / p.se == pytest.approx(-3.9952, abs=5e-4)  # zval
    assert math.exp(p.estimate) == pytest.approx(0.4896, abs=5e-5)  # predict(transf=exp)


def test_dersimonian_laird_matches_an_independent_computation() -> None:
    """The same estimator written as weighted least squares in matrix form (numpy), on
    random data with heterogeneity and without (tau^2 truncated at 0, I^2 = 0)."""
    rng = np.random.default_rng(5)
    for spread in (0.6, 0.0):
        y = rng.normal(1.0, 0.3 + spread, size=9) if spread else np.full(9, 1.0)
        y = y + (rng.normal(0, 0.01, 9) if not spread else 0)
        v = rng.uniform(0.02, 0.2, size=9)
        w = np.diag(1 / v)
        x = np.ones((9, 1))
        beta = np.linalg.solve(x.T @ w @ x, x.T @ w @ y)
        resid = y - x @ beta
        q = float(resid @ w @ resid)
        p_mat = w - w @ x @ np.linalg.solve(x.T @ w @ x, x.T @ w)
        tau2 = max(0.0, (q - 8) / float(np.trace(p_mat)))
        w2 = np.diag(1 / (v + tau2))
        mu = float(np.linalg.solve(x.T @ w2 @ x, x.T @ w2 @ y)[0])
        se = float(np.sqrt(np.linalg.inv(x.T @ w2 @ x)[0, 0]))
        got = dersimonian_laird(list(y), list(v))
        assert got.estimate == pytest.approx(mu, rel=1e-10)
        assert got.se == pytest.approx(se, rel=1e-10)
        assert got.tau2 == pytest.approx(tau2, abs=1e-12)
        assert got.q == pytest.approx(q, rel=1e-10)
        assert got.i2 == pytest.approx(max(0.0, 100 * (q - 8) / q))
    assert dersimonian_laird([0.3], [0.04]).tau2 == 0.0  # one site: its own estimate


def test_logit_scale_from_counts_and_from_the_interval() -> None:
    """Counts give metafor escalc("PLO"): log(x/(n-x)), variance 1/x + 1/(n-x), with 0.5 added
    to both cells when one is empty; without counts the SE comes from the logit CI."""
    y, v = on_scale(Reading("sensitivity", 0.9, None, None, 0.95, 50, 45), "logit") or (0, 0)
    assert (y, v) == pytest.approx((math.log(45 / 5), 1 / 45 + 1 / 5))
    y, v = on_scale(Reading("sensitivity", 1.0, None, None, 0.95, 20, 20), "logit") or (0, 0)
    assert (y, v) == pytest.approx((math.log(20.5 / 0.5), 1 / 20.5 + 1 / 0.5))
    lo, hi = 1 / (1 + math.exp(-(logit(0.8) - 1.959964 * 0.25))), 0.0
    hi = 1 / (1 + math.exp(-(logit(0.8) + 1.959964 * 0.25)))
    y, v = on_scale(Reading("auroc", 0.8, lo, hi, 0.95), "logit") or (0, 0)
    assert y == pytest.approx(logit(0.8)) and math.sqrt(v) == pytest.approx(0.25, rel=1e-5)
    y, v = on_scale(Reading("weighted_kappa", 0.6, 0.5, 0.7, 0.95), "identity") or (0, 0)
    assert math.sqrt(v) == pytest.approx(0.1 / 1.959964, rel=1e-5)
    assert on_scale(Reading("auroc", 0.8, None, None, 0.95), "logit") is None


def test_cusum_fires_on_a_drifting_series_and_not_on_a_stable_one() -> None:
    """Minimum 0.80 (logit 1.386), SE 0.15 on the logit scale, k = 0.5, h = 4."""
    minimum, se = logit(0.80), [0.15] * 10
    stable = [logit(x) for x in (0.86, 0.84, 0.87, 0.85, 0.83, 0.86, 0.84, 0.85, 0.86, 0.84)]
    assert not any(p.alarm for p in lower_cusum(stable, se, minimum, 0.5, 4.0))
    drifting = [logit(x) for x in (0.86, 0.84, 0.82, 0.80, 0.78, 0.77, 0.76, 0.75, 0.74, 0.73)]
    points = lower_cusum(drifting, se, minimum, 0.5, 4.0)
    first = next(i for i, p in enumerate(points) if p.alarm)
    # by hand: C = 0 until 0.80, then 0.30, 0.99, 2.04, 3.46, 5.23 > 4 at 0.74 (index 8)
    assert first == 8
    # hand computation of the recursion C_t = max(0, C_{t-1} - z_t - k)
    c = 0.0
    for y, p in zip(drifting, points, strict=True):
        c = max(0.0, c - (y - minimum) / 0.15 - 0.5)
        assert p.statistic == pytest.approx(c)
    # a single bad period in a good series does not raise the CUSUM alarm
    blip = [logit(x) for x in (0.86, 0.85, 0.74, 0.86, 0.85)]
    assert not any(p.alarm for p in lower_cusum(blip, [0.15] * 5, minimum))


def test_threshold_rule_follows_the_plans_bound() -> None:
    assert below_minimum(0.83, 0.78, 0.80, "ci_lower")
    assert not below_minimum(0.83, 0.78, 0.80, "point")
    assert below_minimum(0.79, 0.75, 0.80, "point")


@pytest.mark.parametrize(
    ("period", "granularity", "label", "start"),
    [
        ({"start": "2025-11", "end": "2026-02"}, "quarter", "2026-Q1", "2026-01-01"),
        ({"start": "2026-08", "end": "2026-08"}, "quarter", "2026-Q3", "2026-07-01"),
        ({"start": "2026-08", "end": "2026-12"}, "month", "2026-12", "2026-12-01"),
        (None, "quarter", "2026-Q2", "2026-04-01"),
    ],
)
def test_period_comes_from_the_evaluation_dates(
    period: dict[str, str] | None, granularity: str, label: str, start: str
) -> None:
    p = {"evaluation_period": period, "created_at": "2026-05-17T10:00:00+00:00"}
    got, first = period_of(p, granularity)
    assert (got, first.isoformat()) == (label, start)


def test_site_payload_names_months_and_the_use_case_not_days() -> None:
    """The site side (feedback_payload): the cohort's first and last study month, and the use
    case of the plan the run followed."""
    from pair.evaluation import feedback as fb
    from pair.evaluation.evaluate import evaluate_scores
    from pair.evaluation.report.context import EvaluationContext
    from tests.evaluation.eval_reference import synthetic

    y, p = synthetic(120, 3)
    r = evaluate_scores(y, p, 0.5, n_boot=50)
    ctx = EvaluationContext(
        algorithm_id="a",
        algorithm_version="1",
        date_range="20251230-20260203",
        plan_check={"ref": "pair-covid19-cxr-pattern@1"},
    )
    payload = fb.build_feedback_payload(r, ctx)
    assert payload["evaluation_period"] == {"start": "2025-12", "end": "2026-02"}
    assert payload["use_case_id"] == "pair-covid19-cxr-pattern"
    assert "20251230" not in json.dumps(payload) and "2026-02-03" not in json.dumps(payload)
    fb.validate_envelope(fb.sign_payload(payload, bytes(32), "k"))
    bare = fb.build_feedback_payload(r, EvaluationContext(algorithm_id="a", algorithm_version="1"))
    assert bare["evaluation_period"] is None and bare["use_case_id"] is None


def test_multiclass_feedback_gives_accuracy_and_weighted_kappa() -> None:
    """A real multiclass payload: accuracy with its counts, linear weighted kappa with its CI."""
    from pair.evaluation import feedback as fb
    from pair.evaluation.evaluate_multiclass import evaluate_classes
    from pair.registry.performance.metrics import readings
    from tests.evaluation.test_eval_multiclass_result import CLASSES, _context, _data

    y, p, _ = _data(120, seed=5)
    r = evaluate_classes(y, p, CLASSES, ordinal=True)
    payload = fb.build_feedback_payload(r, _context())
    got = {x.metric: x for x in readings(payload)}
    assert set(got) == {"accuracy", "weighted_kappa"}
    assert got["accuracy"].n == 120
    assert got["accuracy"].events == sum(r.evaluation.confusion[i][i] for i in range(len(CLASSES)))
    kappa = r.kappa_linear
    assert kappa is not None
    assert (got["weighted_kappa"].value, got["weighted_kappa"].lower) == (kappa.value, kappa.lower)
