"""Multiclass confusion matrix, one-vs-rest metrics and weighted kappa."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from sklearn.metrics import confusion_matrix as sk_confusion

from pair.core.errors import Invalid
from pair.evaluation.stats import multiclass as mc

CLASSES = ["negative", "atypical", "indeterminate", "typical"]


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 4, n)
    shift = rng.choice([-1, 0, 0, 0, 1], n)
    p = np.clip(t + shift, 0, 3)
    logits = rng.normal(size=(n, 4)) + 2.0 * np.eye(4)[t]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = np.array(CLASSES)
    return names[t], names[p], prob


@pytest.mark.parametrize("weighting", ["none", "linear", "quadratic"])
def test_kappa_and_confusion_match_sklearn(weighting: str) -> None:
    t, p, prob = _data(400, 41)
    res = mc.evaluate_multiclass(t, p, CLASSES, prob, weighting=weighting)  # type: ignore[arg-type]
    assert np.array_equal(res.confusion, sk_confusion(t, p, labels=CLASSES))
    sk_w = None if weighting == "none" else weighting
    assert res.kappa.value == pytest.approx(
        cohen_kappa_score(t, p, labels=CLASSES, weights=sk_w), abs=1e-12
    )
    for i, row in enumerate(res.per_class):
        assert row.auc is not None
        assert row.auc.auc == pytest.approx(roc_auc_score(t == CLASSES[i], prob[:, i]), abs=1e-12)
        assert row.sensitivity.value == pytest.approx(np.mean(p[t == CLASSES[i]] == CLASSES[i]))


def test_kappa_se_agrees_with_bootstrap() -> None:
    t, p, _ = _data(500, 42)
    ti, pi = mc.encode(t, CLASSES, "t"), mc.encode(p, CLASSES, "p")
    k = mc.weighted_kappa(mc.confusion_matrix(ti, pi, 4), "quadratic")
    rng = np.random.default_rng(43)
    boots = []
    for _ in range(1500):  # kappa of each resample; the formula itself is checked vs sklearn
        idx = rng.integers(0, t.size, t.size)
        boots.append(mc.weighted_kappa(mc.confusion_matrix(ti[idx], pi[idx], 4), "quadratic").value)
    assert k.se == pytest.approx(np.std(boots, ddof=1), rel=0.1)


def test_unknown_label_is_refused() -> None:
    with pytest.raises(Invalid, match="not one of the classes"):
        mc.evaluate_multiclass(["a", "b"], ["a", "zz"], ["a", "b"])


def test_multiclass_model_is_json_serialisable() -> None:
    t, p, prob = _data(200, 44)
    res = mc.evaluate_multiclass(t, p, CLASSES, prob, weighting="quadratic")
    model = mc.to_model(res)
    back = type(model).model_validate_json(model.model_dump_json())
    assert back.confusion == res.confusion.tolist()
    assert back.kappa.value == pytest.approx(res.kappa.value)
    assert [c.name for c in back.per_class] == CLASSES
