"""Multiclass outputs: confusion matrix, one-vs-rest binary metrics, weighted kappa with CI.

Cohen's weighted kappa uses agreement weights w_ij = 1 - |i - j| / (k - 1) (linear) or
1 - (i - j)^2 / (k - 1)^2 (quadratic) over the ordered class list; its large-sample variance is
that of Fleiss, Cohen & Everitt (1969, Psychol Bull 72:323-327), which gives a Wald CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from pair.core.errors import Invalid
from pair.evaluation.result import ClassMetrics, Estimate, MulticlassEvaluation
from pair.evaluation.stats.arrays import FloatArray, IntArray, check_level
from pair.evaluation.stats.proportions import Proportion, proportion
from pair.evaluation.stats.roc import AucCI, auc_ci_delong

Weighting = Literal["none", "linear", "quadratic"]


def encode(labels: Any, classes: list[Any], name: str) -> IntArray:
    """Class labels -> indices into ``classes``; unknown labels are refused."""
    arr = np.asarray(labels)
    lookup = {c: i for i, c in enumerate(classes)}
    try:
        return np.array([lookup[v.item() if hasattr(v, "item") else v] for v in arr], np.int64)
    except KeyError as exc:
        raise Invalid(f"{name} contains {exc.args[0]!r}, not one of the classes {classes}") from exc


def confusion_matrix(t: IntArray, p: IntArray, k: int) -> IntArray:
    """Rows = reference class, columns = predicted class."""
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def agreement_weights(k: int, weighting: Weighting) -> FloatArray:
    i, j = np.indices((k, k))
    if weighting == "none" or k == 1:
        return (i == j).astype(np.float64)
    if weighting == "linear":
        return 1.0 - np.abs(i - j) / (k - 1)
    if weighting == "quadratic":
        return 1.0 - (i - j) ** 2 / (k - 1) ** 2
    raise Invalid(f"weighting must be 'none', 'linear' or 'quadratic', got {weighting!r}")


@dataclass(frozen=True)
class Kappa:
    value: float
    se: float
    lower: float
    upper: float
    weighting: str


def weighted_kappa(cm: IntArray, weighting: Weighting = "linear", level: float = 0.95) -> Kappa:
    """Cohen's (weighted) kappa with the Fleiss-Cohen-Everitt standard error."""
    check_level(level)
    n = float(cm.sum())
    if n == 0:
        raise Invalid("kappa needs at least one case")
    w = agreement_weights(cm.shape[0], weighting)
    p = cm / n
    r, c = p.sum(axis=1), p.sum(axis=0)
    po = float(np.sum(w * p))
    pe = float(np.sum(w * np.outer(r, c)))
    if pe >= 1.0:
        return Kappa(float("nan"), float("nan"), float("nan"), float("nan"), weighting)
    kappa = (po - pe) / (1 - pe)
    wi = w @ c  # weighted mean over columns for each row class
    wj = r @ w  # weighted mean over rows for each column class
    term = np.sum(p * (w - (wi[:, None] + wj[None, :]) * (1 - kappa)) ** 2)
    var = (term - (kappa - pe * (1 - kappa)) ** 2) / (n * (1 - pe) ** 2)
    se = float(np.sqrt(max(var, 0.0)))
    z = float(sps.norm.ppf(0.5 + level / 2))
    return Kappa(float(kappa), se, kappa - z * se, kappa + z * se, weighting)


@dataclass(frozen=True)
class OneVsRest:
    cls: str
    n_reference: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    auc: AucCI | None


@dataclass(frozen=True)
class MulticlassStats:
    classes: list[str]
    confusion: IntArray
    accuracy: Proportion
    per_class: list[OneVsRest]
    kappa: Kappa


def evaluate_multiclass(
    y_true: Any,
    y_pred: Any,
    classes: list[Any],
    probabilities: Any | None = None,
    *,
    weighting: Weighting = "linear",
    level: float = 0.95,
) -> MulticlassStats:
    """Confusion matrix, per-class one-vs-rest metrics (AUC from the class probability column
    when ``probabilities`` (n, k) is given) and weighted kappa over the ordered ``classes``."""
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise Invalid(f"classes must list at least two distinct labels, got {classes}")
    t, p = encode(y_true, classes, "y_true"), encode(y_pred, classes, "y_pred")
    if t.size != p.size:
        raise Invalid(f"y_true has {t.size} values but y_pred has {p.size}")
    k = len(classes)
    probs = None
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.shape != (t.size, k):
            raise Invalid(f"probabilities must have shape ({t.size}, {k}), got {probs.shape}")
    cm = confusion_matrix(t, p, k)
    per_class = []
    for i, name in enumerate(classes):
        tp = int(cm[i, i])
        fn = int(cm[i].sum() - tp)
        fp = int(cm[:, i].sum() - tp)
        tn = int(cm.sum() - tp - fn - fp)
        ref = t == i
        auc_ci = None
        if probs is not None and 0 < ref.sum() < t.size:
            auc_ci = auc_ci_delong(ref.astype(np.int64), probs[:, i], level)
        per_class.append(
            OneVsRest(
                str(name),
                tp + fn,
                proportion(tp, tp + fn, level),
                proportion(tn, tn + fp, level),
                proportion(tp, tp + fp, level),
                auc_ci,
            )
        )
    return MulticlassStats(
        [str(c) for c in classes],
        cm,
        proportion(int(np.trace(cm)), int(cm.sum()), level),
        per_class,
        weighted_kappa(cm, weighting, level),
    )


def proportion_estimate(p: Proportion) -> Estimate:
    """A Wilson proportion in the JSON model."""
    return Estimate(
        value=p.value,
        lower=p.lower,
        upper=p.upper,
        method="wilson",
        numerator=p.numerator,
        denominator=p.denominator,
    )


def to_model(res: MulticlassStats) -> MulticlassEvaluation:
    """Pydantic/JSON form for the CLI, the portal and stored evaluations."""
    prop = proportion_estimate

    return MulticlassEvaluation(
        classes=res.classes,
        confusion=res.confusion.tolist(),
        accuracy=prop(res.accuracy),
        per_class=[
            ClassMetrics(
                name=c.cls,
                n_reference=c.n_reference,
                sensitivity=prop(c.sensitivity),
                specificity=prop(c.specificity),
                ppv=prop(c.ppv),
                auc=None
                if c.auc is None
                else Estimate(
                    value=c.auc.auc, lower=c.auc.lower, upper=c.auc.upper, method="delong"
                ),
            )
            for c in res.per_class
        ],
        kappa=Estimate(
            value=res.kappa.value,
            lower=res.kappa.lower,
            upper=res.kappa.upper,
            method="fleiss-cohen-everitt wald",
        ),
        kappa_weighting=res.kappa.weighting,
    )
