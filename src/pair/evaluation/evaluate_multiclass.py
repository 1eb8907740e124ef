"""``evaluate_classes``: the full ``MulticlassResult`` for per-case class probability vectors.

The prediction is the class with the highest probability (the first class in the manifest's
order on ties). Statistics come from ``stats.multiclass``: confusion matrix, per-class one-vs-rest
sensitivity/specificity/PPV/NPV (Wilson) and AUC of that class's probability (DeLong), accuracy
(Wilson), Cohen's kappa (Fleiss-Cohen-Everitt Wald CI), plus linear and quadratic weighted kappa
when the classes are ordinal. Subgroups report n, accuracy and kappa per level. When a patient
has several cases (``clusters``), every interval comes from the patient-clustered bootstrap
instead (``stats.multiclass_boot``), as for binary results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pair.core.errors import Invalid
from pair.evaluation.calibration_multiclass import multiclass_calibration
from pair.evaluation.result import (
    ClassRoc,
    Estimate,
    MulticlassCohort,
    MulticlassEvaluation,
    MulticlassResult,
    MulticlassSubgroupRow,
    RocPoint,
)
from pair.evaluation.stats.arrays import check_level
from pair.evaluation.stats.bootstrap import BootstrapRun, patients_repeat
from pair.evaluation.stats.compare import clustered_mcnemar_warning
from pair.evaluation.stats.multiclass import (
    Kappa,
    Weighting,
    confusion_matrix,
    evaluate_multiclass,
    proportion_estimate,
    to_model,
    weighted_kappa,
)
from pair.evaluation.stats.multiclass_boot import clustered_bootstrap
from pair.evaluation.stats.proportions import proportion
from pair.evaluation.stats.roc import roc_curve
from pair.evaluation.subgroups import (
    MAX_CI_WIDTH,
    MIN_PER_CLASS,
    SUBGROUP_BOOT,
    group_counts,
    group_labels,
)

MAX_ROC_POINTS = 1000  # per class; thinned for display only beyond this
MIN_SUBGROUP_N = 30


def _kappa(k: Kappa) -> Estimate:
    return Estimate(value=k.value, lower=k.lower, upper=k.upper, method="fleiss-cohen-everitt wald")


def _wilson(successes: int, trials: int, level: float) -> Estimate:
    return proportion_estimate(proportion(successes, trials, level))


def _boot(e: Estimate | None, run: BootstrapRun, key: str, level: float) -> Estimate | None:
    """``e`` with its interval replaced by the bootstrap percentile interval of ``key``."""
    if e is None or e.value is None or key not in run.replicates:
        return e
    iv = run.interval(key, e.value, level, "percentile")
    lower = iv.lower if np.isfinite(iv.lower) else None
    upper = iv.upper if np.isfinite(iv.upper) else None
    return e.model_copy(update={"lower": lower, "upper": upper, "method": iv.method})


def _clustered_evaluation(
    ev: MulticlassEvaluation, run: BootstrapRun, level: float
) -> MulticlassEvaluation:
    per_class = []
    for i, pc in enumerate(ev.per_class):
        upd = {m: _boot(getattr(pc, m), run, f"{i}:{m}", level) for m in _CLASS_METRICS}
        per_class.append(pc.model_copy(update=upd))
    return ev.model_copy(
        update={
            "accuracy": _boot(ev.accuracy, run, "accuracy", level),
            "kappa": _boot(ev.kappa, run, "kappa:none", level),
            "per_class": per_class,
        }
    )


_CLASS_METRICS = ("sensitivity", "specificity", "ppv", "npv", "auc")


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
    clusters: np.ndarray | None = None,
    n_boot: int = SUBGROUP_BOOT,
    seed: int = 0,
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
            if clusters is not None:
                run = clustered_bootstrap(
                    y[m], pred[m], k, clusters[m], weightings=[weighting], n_boot=n_boot, seed=seed
                )
                acc = _boot(acc, run, "accuracy", level) or acc
                kappa = _boot(kappa, run, f"kappa:{weighting}", level)
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
    n_boot: int = 2000,
    seed: int = 0,
    exclusions: Mapping[str, int] | None = None,
    compare_probabilities: Any | None = None,
    names: tuple[str, str] = ("algorithm", "comparator"),
) -> MulticlassResult:
    """Evaluate ``probabilities`` (n, k) against reference class indices ``y_true`` (0..k-1).

    ``clusters`` (patient ids): when some patient has several cases, all intervals come from
    ``n_boot`` patient-clustered bootstrap resamples (percentile; seeded by ``seed``).
    ``compare_probabilities`` (n, k): a second algorithm with the same classes on the same
    cases; see ``compare_multiclass``."""
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
    class_arr = np.asarray(classes, dtype=object)
    base = evaluate_multiclass(
        class_arr[y], class_arr[pred], list(classes), probs, weighting="none", level=level
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
    cl = None if clusters is None else np.asarray(clusters, dtype=object).astype(str)
    if cl is not None and cl.shape != (y.size,):
        raise Invalid(f"clusters must be one-dimensional with {y.size} values, got {cl.shape}")
    n_clusters = None if cl is None else int(np.unique(cl).size)
    clustered = cl is not None and patients_repeat(cl)
    interval_method = "wilson / delong / fleiss-cohen-everitt"
    if clustered:
        weightings: list[Weighting] = ["none", "linear", "quadratic"] if ordinal else ["none"]
        run = clustered_bootstrap(
            y, pred, k, cl, weightings=weightings, probabilities=probs, n_boot=n_boot, seed=seed
        )
        evaluation = _clustered_evaluation(evaluation, run, level)
        lin = _boot(lin, run, "kappa:linear", level)
        quad = _boot(quad, run, "kappa:quadratic", level)
        interval_method = f"patient-clustered bootstrap percentile ({n_boot} resamples)"
    subgroups = _subgroups(
        y,
        pred,
        list(classes),
        groups or {},
        weighting,
        level,
        clusters=cl if clustered else None,
        n_boot=min(n_boot, SUBGROUP_BOOT),
        seed=seed,
    )

    calibration, warnings = multiclass_calibration(
        y,
        probs,
        list(classes),
        level=level,
        n_boot=n_boot,
        seed=seed,
        clusters=cl if clustered else None,
    )
    comparison = None
    if compare_probabilities is not None:
        from pair.evaluation.compare_multiclass import compare_classes

        other = np.asarray(compare_probabilities, dtype=np.float64)
        if other.shape != probs.shape or not np.all(np.isfinite(other)):
            raise Invalid(f"compare_probabilities must be finite with shape {probs.shape}")
        comparison = compare_classes(
            y,
            probs,
            other,
            list(classes),
            names=names,
            weighting=weighting,
            clusters=cl if clustered else None,
            level=level,
            n_boot=n_boot,
            seed=seed,
        )
        if clustered:
            warnings.append(clustered_mcnemar_warning(1))
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
    if clustered:
        warnings.append(
            f"{y.size} cases come from {n_clusters} patients: all intervals use the "
            "patient-clustered bootstrap."
        )
    small = [f"{r.variable}={r.level}" for r in subgroups if r.too_small]
    if small:
        warnings.append("Subgroups too small to say anything: " + ", ".join(small))

    excl = dict(exclusions or {})
    if any(v < 0 for v in excl.values()):
        raise Invalid("exclusion counts must be non-negative")
    cohort = MulticlassCohort(
        n_cases=int(y.size),
        class_counts={c: int(n) for c, n in zip(classes, counts, strict=True)},
        predicted_counts={c: int(n) for c, n in zip(classes, cm.sum(axis=0), strict=True)},
        n_clusters=n_clusters,
        groups=group_counts(groups or {}, y.size),
        n_excluded=int(sum(excl.values())),
        exclusion_reasons=excl,
    )
    resampled = clustered or comparison is not None or calibration is not None
    return MulticlassResult(
        level=level,
        n_boot=n_boot if resampled else 0,
        seed=seed if resampled else 0,
        interval_method=interval_method,
        class_labels=list(class_labels or classes),
        ordinal=ordinal,
        cohort=cohort,
        evaluation=evaluation,
        macro_auc=macro,
        kappa_linear=lin,
        kappa_quadratic=quad,
        roc=roc,
        calibration=calibration,
        subgroups=subgroups,
        comparison=comparison,
        warnings=warnings,
    )
