"""Paired DeLong test and McNemar against brute force and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pair.evaluation.stats import compare
from tests.evaluation.eval_reference import brute_delong, hanley_mcneil_data, synthetic


def test_delong_test_equals_brute_force() -> None:
    y, a = synthetic(250, 21)
    b = a + np.random.default_rng(22).normal(scale=0.4, size=a.size)
    res = compare.delong_test(y, a, b)
    aucs, s = brute_delong(y, [a, b])
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (aucs[0] - aucs[1]) / np.sqrt(var)
    assert res.difference == pytest.approx(aucs[0] - aucs[1], abs=1e-12)
    assert res.se == pytest.approx(np.sqrt(var), abs=1e-12)
    assert res.z == pytest.approx(z, abs=1e-9)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-12)
    assert res.lower < res.difference < res.upper


def test_algorithm_versus_ordinal_reader_category() -> None:
    y, ratings = hanley_mcneil_data()
    rng = np.random.default_rng(23)
    algo = ratings + rng.normal(scale=1.0, size=ratings.size)
    res = compare.delong_test(y, algo, ratings)
    assert res.auc_b == pytest.approx(0.8931711, abs=1e-7)
    assert 0 <= res.p_value <= 1


def test_identical_scores_give_no_difference() -> None:
    y, a = synthetic(100, 24)
    res = compare.delong_test(y, a, a)
    assert res.difference == 0.0 and res.p_value == 1.0


@pytest.mark.parametrize(("b", "c"), [(0, 5), (3, 9), (12, 4), (10, 14)])
def test_mcnemar_exact_for_small_discordant_counts(b: int, c: int) -> None:
    res = compare.mcnemar(b, c)
    assert res.method == "exact binomial"
    assert res.p_value == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, abs=1e-12)


@pytest.mark.parametrize(("b", "c"), [(30, 12), (20, 25), (100, 70)])
def test_mcnemar_chi_square_with_continuity(b: int, c: int) -> None:
    res = compare.mcnemar(b, c)
    stat = (abs(b - c) - 1) ** 2 / (b + c)
    assert res.statistic == pytest.approx(stat, abs=1e-12)
    assert res.p_value == pytest.approx(stats.chi2.sf(stat, 1), abs=1e-12)


def test_paired_decisions_counts_discordant_pairs_per_class() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    a = np.array([0.9, 0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.1])
    b = np.array([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9])
    res = compare.paired_decisions(y, a, 0.5, b, 0.5)
    assert (res.sensitivity_test.b, res.sensitivity_test.c) == (2, 0)
    assert (res.specificity_test.b, res.specificity_test.c) == (2, 1)
    assert res.sensitivity_a == 0.75 and res.sensitivity_b == 0.25
