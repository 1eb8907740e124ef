"""``evaluate_classes``: the full ``MulticlassResult`` for per-case class probability vectors.

The prediction is the class with the highest probability (the first class in the manifest's
order on ties). Statistics come from ``stats.multiclass``: confusion matrix, per-class one-vs-rest
sensitivity/specificity/PPV/NPV (Wilson) and AUC of that class's probability (DeLong), accuracy
(Wilson), Cohen's kappa (Fleiss-Cohen-Everitt Wald CI), plus linear and quadratic weighted kappa
when the classes are ordinal. Subgroups report n, accuracy and kappa per level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pair.core.errors import Invalid
from pair.evaluation.result import (
    ClassRoc,
    Estimate,
    MulticlassCohort,
    MulticlassResult,
    MulticlassSubgroupRow,
    RocPoint,
)
from pair.evaluation.stats.arrays import check_level
from pair.evaluation.stats.multiclass import (
    Kappa,
    Weighting,
    confusion_matrix,
    evaluate_multiclass,
    to_model,
    weighted_kappa,
)
from pair.evaluation.stats.proportions import proportion
from pair.evaluation.stats.roc import roc_curve
from pair.evaluation.subgroups import group_labels

MAX_ROC_POINTS = 1000  # per class; thinned for display only beyond this
MIN_SUBGROUP_N = 30
MAX_CI_WIDTH = 0.4
MIN_PER_CLASS = 10


def _kappa(k: Kappa) -> Estimate:
    return Estimate(value=k.value, lower=k.lower, upper=k.upper, method="fleiss-cohen-everitt wald")


def _wilson(successes: int, trials: int, level: float) -> Estimate:
    p = proportion(successes, trials, level)
    return Estimate(
        value=p.value,
        lower=p.lower,
        upper=p.upper,
        method="wilson",
        numerator=p.numerator,
        denominator=p.denominator,
    )


def predict(probabilities: Any) -> np.ndarray:
    """Argmax over classes; ``np.argmax`` takes the first maximum, i.e. manifest order."""
    return np.asarray(np.argmax(np.asarray(probabilities, dtype=np.float64), axis=1), np.int64)


def _subgroups(
    y: np.ndarray,
    pred: np.ndarray,
    classes: list[str],
    groups: Mapping[str, Any],
    weighting: Weighting,
    level: float,
) -> list[MulticlassSubgroupRow]:
    k = len(classes)
    rows = []
    for var, values in groups.items():
        labels = np.asarray(group_labels(values, y.size, var), dtype=object)
        for lev in sorted(set(labels.tolist())):
            m = labels == lev
            n = int(m.sum())
            cm = confusion_matrix(y[m], pred[m], k)
            acc = _wilson(int(np.trace(cm)), n, level)
            kap = weighted_kappa(cm, weighting, level)
            kappa = None if not np.isfinite(kap.value) else _kappa(kap)
            reasons = []
            if n < MIN_SUBGROUP_N:
                reasons.append(f"n = {n} < {MIN_SUBGROUP_N}")
            present = int((cm.sum(axis=1) > 0).sum())
            if present < 2:
                reasons.append("fewer than 2 reference classes present")
            if acc.width is not None and acc.width > MAX_CI_WIDTH:
                reasons.append(f"accuracy CI wider than {MAX_CI_WIDTH}")
            if kappa is None:
                reasons.append("kappa undefined (chance agreement is 1)")
            rows.append(
                MulticlassSubgroupRow(
                    variable=var,
                    level=str(lev),
                    n=n,
                    class_counts={c: int(v) for c, v in zip(classes, cm.sum(axis=1), strict=True)},
                    accuracy=acc,
                    kappa=kappa,
                    too_small=bool(reasons),
                    reasons=reasons,
                )
            )
    return rows


def evaluate_classes(
    y_true: Any,
    probabilities: Any,
    classes: list[str],
    *,
    class_labels: list[str] | None = None,
    ordinal: bool = False,
    groups: Mapping[str, Any] | None = None,
    clusters: Any | None = None,
    level: float = 0.95,
    exclusions: Mapping[str, int] | None = None,
) -> MulticlassResult:
    """Evaluate ``probabilities`` (n, k) against reference class indices ``y_true`` (0..k-1)."""
    check_level(level)
    k = len(classes)
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise Invalid(f"y_true must be a non-empty list of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
        raise Invalid(f"y_true must hold class indices 0..{k - 1}")
    y = y.astype(np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape != (y.size, k):
        raise Invalid(f"probabilities must have shape ({y.size}, {k}), got {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise Invalid("probabilities must be finite numbers")
    pred = predict(probs)
    names = np.asarray(classes, dtype=object)
    base = evaluate_multiclass(
        names[y], names[pred], list(classes), probs, weighting="none", level=level
    )
    evaluation = to_model(base)
    cm = base.confusion
    for i, pc in enumerate(evaluation.per_class):
        tn = int(cm.sum() - cm[i].sum() - cm[:, i].sum() + cm[i, i])
        negatives_predicted = int(cm.sum() - cm[:, i].sum())  # TN + FN
        evaluation.per_class[i] = pc.model_copy(
            update={"npv": _wilson(tn, negatives_predicted, level)}
        )
    aucs = [pc.auc.value if pc.auc is not None else None for pc in evaluation.per_class]
    macro = float(np.mean([a for a in aucs if a is not None])) if None not in aucs else None
    roc = []
    for i, name in enumerate(classes):
        ref = (y == i).astype(np.int64)
        points: list[RocPoint] = []
        if 0 < ref.sum() < y.size:
            curve = roc_curve(ref, probs[:, i])
            keep = np.arange(curve.fpr.size)
            if keep.size > MAX_ROC_POINTS:
                keep = np.unique(np.linspace(0, keep.size - 1, MAX_ROC_POINTS).round().astype(int))
            points = [RocPoint(fpr=float(curve.fpr[j]), tpr=float(curve.tpr[j])) for j in keep]
        roc.append(ClassRoc(name=name, auc=aucs[i], points=points))

    weighting: Weighting = "linear" if ordinal else "none"
    lin = quad = None
    if ordinal:
        lin = _kappa(weighted_kappa(cm, "linear", level))
        quad = _kappa(weighted_kappa(cm, "quadratic", level))
    subgroups = _subgroups(y, pred, list(classes), groups or {}, weighting, level)

    warnings: list[str] = []
    counts = cm.sum(axis=1)
    missing = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if missing:
        warnings.append(
            "No reference case of class(es) " + ", ".join(missing) + ": their sensitivity and "
            "one-vs-rest AUC are undefined, and the macro-average AUC is not given."
        )
    few = [f"{c} ({n})" for c, n in zip(classes, counts, strict=True) if 0 < n < MIN_PER_CLASS]
    if few:
        warnings.append(
            f"Fewer than {MIN_PER_CLASS} reference cases for: {', '.join(few)}; "
            "their per-class metrics are very uncertain."
        )
    n_clusters = None
    if clusters is not None:
        n_clusters = int(np.unique(np.asarray(clusters, dtype=object).astype(str)).size)
        if n_clusters < y.size:
            warnings.append(
                f"{y.size} cases come from {n_clusters} patients: the Wilson, DeLong and kappa "
                "intervals assume independent cases and are too narrow."
            )
    small = [f"{r.variable}={r.level}" for r in subgroups if r.too_small]
    if small:
        warnings.append("Subgroups too small to say anything: " + ", ".join(small))

    group_counts = {}
    for var, values in (groups or {}).items():
        labels = group_labels(values, y.size, var)
        uniq, cnt = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
        group_counts[var] = {str(u): int(c) for u, c in zip(uniq, cnt, strict=True)}
    excl = dict(exclusions or {})
    if any(v < 0 for v in excl.values()):
        raise Invalid("exclusion counts must be non-negative")
    cohort = MulticlassCohort(
        n_cases=int(y.size),
        class_counts={c: int(n) for c, n in zip(classes, counts, strict=True)},
        predicted_counts={c: int(n) for c, n in zip(classes, cm.sum(axis=0), strict=True)},
        n_clusters=n_clusters,
        groups=group_counts,
        n_excluded=int(sum(excl.values())),
        exclusion_reasons=excl,
    )
    return MulticlassResult(
        level=level,
        class_labels=list(class_labels or classes),
        ordinal=ordinal,
        cohort=cohort,
        evaluation=evaluation,
        macro_auc=macro,
        kappa_linear=lin,
        kappa_quadratic=quad,
        roc=roc,
        subgroups=subgroups,
        warnings=warnings,
    )
