"""``evaluate_scores``: one call that produces the full ``EvaluationResult`` for binary scores.

Interval methods (see docs/evaluation.md): AUC by DeLong, sensitivity/specificity/PPV/NPV/
accuracy by Wilson, F1 and Brier by a seeded class-stratified bootstrap. When ``clusters``
(patient ids) are given, the AUC and all threshold metrics use the patient-clustered bootstrap
instead, because DeLong and Wilson assume independent cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from pair.core.errors import Invalid
from pair.evaluation.flags import result_flags
from pair.evaluation.result import (
    AucComparison,
    CalibrationResult,
    CohortDescription,
    ComparisonResult,
    ConfusionCounts,
    Estimate,
    EvaluationResult,
    McNemarModel,
    OperatingPoint,
    ReliabilityModel,
    RocPoint,
    ThresholdRow,
)
from pair.evaluation.stats import calibration as cal
from pair.evaluation.stats.arrays import (
    FloatArray,
    IntArray,
    as_labels,
    as_scores,
    check_level,
    require_both_classes,
)
from pair.evaluation.stats.bootstrap import BootstrapRun, Method, run_bootstrap
from pair.evaluation.stats.compare import (
    clustered_mcnemar_warning,
    delong_test,
    paired_decisions,
)
from pair.evaluation.stats.proportions import (
    Proportion,
    binary_metrics,
    confusion_at,
    predictive_values_at_prevalence,
)
from pair.evaluation.stats.roc import (
    auc_ci_delong,
    interpolate_tpr,
    roc_curve,
    threshold_for_sensitivity,
    threshold_for_specificity,
    youden_threshold,
)
from pair.evaluation.stats.weighted import (
    SortedScores,
    auc_from_cumulative,
    count_vectors,
    counts_from_product,
    threshold_stats,
    tpr_from_cumulative,
    weighted_auc,
)
from pair.evaluation.subgroups import SUBGROUP_BOOT, group_counts, subgroup_rows

ROC_GRID = np.linspace(0.0, 1.0, 101)
WIDE_CI = 0.4
MAX_EMPIRICAL_POINTS = 1000
RECOMMENDED_POSITIVES = 139  # sensitivity ~0.9 within +/-0.05 (95% CI)
THRESHOLD_METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "f1")


def _prop(p: Proportion, method: str = "wilson") -> Estimate:
    return Estimate(
        value=p.value,
        lower=p.lower,
        upper=p.upper,
        method=method,
        numerator=p.numerator,
        denominator=p.denominator,
    )


def boot_estimate(
    run: BootstrapRun, key: str, value: float, level: float, method: Method
) -> Estimate:
    iv = run.interval(key, value, level, method)
    return Estimate(value=value, lower=iv.lower, upper=iv.upper, method=iv.method)


def _operating_point(
    name: str,
    source: str,
    y: IntArray,
    s: FloatArray,
    threshold: float,
    level: float,
    run: BootstrapRun,
    boot_method: Method,
    clustered: bool,
    prevalence: float | None,
    same_data: bool,
) -> OperatingPoint:
    c = confusion_at(y, s, threshold)
    m = binary_metrics(c, level)
    est: dict[str, Estimate] = {}
    for metric in THRESHOLD_METRICS:
        key = f"{name}:{metric}"
        if metric == "f1" or clustered:
            value = m.f1 if metric == "f1" else getattr(m, metric).value
            e = boot_estimate(run, key, value, level, boot_method)
            if metric != "f1":
                p = getattr(m, metric)
                e = e.model_copy(update={"numerator": p.numerator, "denominator": p.denominator})
            est[metric] = e
        else:
            est[metric] = _prop(getattr(m, metric))
    ppv_p = npv_p = None
    if prevalence is not None:
        pv = predictive_values_at_prevalence(c, prevalence, level)
        ppv_p = Estimate(
            value=pv.ppv.value, lower=pv.ppv.lower, upper=pv.ppv.upper, method=pv.method
        )
        npv_p = Estimate(
            value=pv.npv.value, lower=pv.npv.lower, upper=pv.npv.upper, method=pv.method
        )
    return OperatingPoint(
        name=name,
        source=source,
        threshold=float(threshold),
        confusion=ConfusionCounts(tp=c.tp, fp=c.fp, tn=c.tn, fn=c.fn),
        ppv_at_prevalence=ppv_p,
        npv_at_prevalence=npv_p,
        chosen_on_same_data=same_data,
        **est,
    )


def _threshold_table(
    y: IntArray, s: FloatArray, probabilities: bool, level: float
) -> list[ThresholdRow]:
    if probabilities:
        cuts = np.round(np.arange(0.1, 1.0, 0.1), 10)
    else:
        cuts = np.unique(np.quantile(s, np.arange(0.1, 1.0, 0.1)))
    rows = []
    for t in cuts:
        c = confusion_at(y, s, float(t))
        m = binary_metrics(c, level)
        rows.append(
            ThresholdRow(
                threshold=float(t),
                predicted_positive=c.tp + c.fp,
                sensitivity=_prop(m.sensitivity),
                specificity=_prop(m.specificity),
                ppv=_prop(m.ppv),
                npv=_prop(m.npv),
            )
        )
    return rows


def _reliability(r: cal.Reliability) -> ReliabilityModel:
    return ReliabilityModel.model_validate(
        {
            "binning": r.binning,
            "n_bins": r.n_bins,
            "ece": r.ece,
            "mce": r.mce,
            "bins": [b.__dict__ for b in r.bins],
        }
    )


def calibration_result(
    y: IntArray, p: FloatArray, brier: Estimate, level: float
) -> CalibrationResult:
    """Brier (interval computed by the caller), logistic recalibration and reliability bins."""
    rec = cal.logistic_calibration(y, p, level)

    def wald(c: cal.Coefficient, method: str) -> Estimate:
        return Estimate(value=c.value, lower=c.lower, upper=c.upper, method=method)

    return CalibrationResult(
        brier=brier,
        slope=wald(rec.slope, "wald (logistic recalibration)"),
        intercept=wald(rec.intercept, "wald (logistic recalibration)"),
        calibration_in_the_large=wald(rec.calibration_in_the_large, "wald (offset logit p)"),
        reliability_uniform=_reliability(cal.reliability(y, p, 10, "uniform", level)),
        reliability_quantile=_reliability(cal.reliability(y, p, 10, "quantile", level)),
        converged=rec.converged,
    )


def evaluate_scores(
    y_true: Any,
    scores: Any,
    threshold: float,
    *,
    groups: Mapping[str, Any] | None = None,
    clusters: Any | None = None,
    prevalence: float | None = None,
    target_sensitivity: float | None = None,
    target_specificity: float | None = None,
    fixed_threshold: float | None = None,
    threshold_source: str = "declared threshold",
    compare_scores: Any | None = None,
    compare_threshold: float | None = None,
    names: tuple[str, str] = ("algorithm", "comparator"),
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    auc_ci: Literal["delong", "bootstrap"] = "delong",
    boot_method: Method = "percentile",
    probabilities: bool | None = None,
    exclusions: Mapping[str, int] | None = None,
) -> EvaluationResult:
    """Evaluate binary scores (higher = more likely positive; positive when score >= threshold).

    ``probabilities`` defaults to "all scores lie in [0, 1]"; calibration is only computed for
    probabilities. ``compare_scores`` may be a second algorithm or an ordinal reader category.
    ``threshold_source`` says where ``threshold`` came from (e.g. a default, not declared);
    ``fixed_threshold`` and ``target_specificity`` add the operating points a use case's plan
    names (the latter chosen on this cohort, so optimistic).
    """
    check_level(level)
    y = as_labels(y_true)
    s = as_scores(scores, y.size)
    require_both_classes(y, "evaluation")
    for label, value in (("threshold", threshold), ("compare_threshold", compare_threshold)):
        if value is not None and not np.isfinite(value):
            raise Invalid(f"{label} must be a finite number, got {value}")
    warnings: list[str] = []
    is_prob = bool(s.min() >= 0 and s.max() <= 1) if probabilities is None else probabilities
    clustered = clusters is not None
    if clustered and np.asarray(clusters).shape != (y.size,):
        raise Invalid(
            f"clusters must be one-dimensional with {y.size} values, "
            f"got shape {np.asarray(clusters).shape}"
        )
    other = None if compare_scores is None else as_scores(compare_scores, y.size, "compare_scores")

    points: list[tuple[str, str, float, bool]] = [
        ("manifest", threshold_source, float(threshold), False)
    ]
    points.append(("youden", "maximum Youden J on this cohort", youden_threshold(y, s), True))
    if target_sensitivity is not None:
        points.append(
            (
                "target_sensitivity",
                f"highest threshold with sensitivity >= {target_sensitivity:g}",
                threshold_for_sensitivity(y, s, target_sensitivity),
                True,
            )
        )
    if target_specificity is not None:
        points.append(
            (
                "target_specificity",
                f"lowest threshold with specificity >= {target_specificity:g} on this cohort",
                threshold_for_specificity(y, s, target_specificity),
                True,
            )
        )
    if fixed_threshold is not None:
        if not np.isfinite(fixed_threshold):
            raise Invalid(f"fixed_threshold must be a finite number, got {fixed_threshold}")
        points.append(("fixed", "fixed threshold of the use case's plan", fixed_threshold, False))

    # The bootstrap works in score order: weights are drawn for the sorted cases, so the
    # per-resample sort/gather disappears (every statistic is order-invariant).
    perm = np.argsort(s, kind="mergesort")
    ys, sc = y[perm], s[perm]
    ss = SortedScores.build(ys, sc)
    preds = {name: sc >= t for name, _, t, _ in points}

    # One (n, 4k [+1]) design: a single pass of W per chunk gives every count (and Brier).
    names_order = list(preds)
    design = [count_vectors(ys, preds[name]) for name in names_order]
    if is_prob:
        design.append(((sc - ys) ** 2)[:, None])
    design_m = np.hstack(design).astype(np.float32)
    # With clusters the paired AUC difference also comes from the (same) clustered resamples.
    ss_other = None if other is None or not clustered else SortedScores.build(ys, other[perm])

    def stat_fn(w: FloatArray) -> dict[str, FloatArray]:
        cp, cn = ss.cumulative(w)
        out = {"auc": auc_from_cumulative(cp, cn)}
        prod = w @ design_m
        for k, name in enumerate(names_order):
            out.update(threshold_stats(counts_from_product(prod[:, 4 * k : 4 * k + 4]), f"{name}:"))
        if is_prob:
            out["brier"] = prod[:, -1] / w.sum(axis=1)
        if ss_other is not None:
            out["auc_diff"] = out["auc"] - weighted_auc(w, ss_other)
        tprs = tpr_from_cumulative(cp, cn, ROC_GRID)
        for k in range(ROC_GRID.size):
            out[f"roc:{k}"] = tprs[:, k]
        return out

    run = run_bootstrap(
        stat_fn,
        y.size,
        n_boot=n_boot,
        seed=seed,
        strata=None if clustered else ys,
        clusters=None if clusters is None else np.asarray(clusters)[perm],
        bca=boot_method == "bca",
    )

    dl = auc_ci_delong(y, s, level)
    auc_delong = Estimate(value=dl.auc, lower=dl.lower, upper=dl.upper, method="delong")
    auc_boot = boot_estimate(run, "auc", dl.auc, level, boot_method)
    primary = auc_boot if (clustered or auc_ci == "bootstrap") else auc_delong

    ops = [
        _operating_point(name, src, y, s, t, level, run, boot_method, clustered, prevalence, same)
        for name, src, t, same in points
    ]

    curve = roc_curve(y, s)
    tpr_grid = interpolate_tpr(curve.fpr, curve.tpr, ROC_GRID)
    roc = []
    for k, f in enumerate(ROC_GRID):
        iv = run.interval(f"roc:{k}", float(tpr_grid[k]), level, "percentile")
        roc.append(
            RocPoint(fpr=float(f), tpr=float(tpr_grid[k]), tpr_lower=iv.lower, tpr_upper=iv.upper)
        )
    keep = np.arange(curve.fpr.size)
    if keep.size > MAX_EMPIRICAL_POINTS:  # thin for display; the grid curve stays exact
        keep = np.unique(np.linspace(0, keep.size - 1, MAX_EMPIRICAL_POINTS).round().astype(int))
    roc_emp = [RocPoint(fpr=float(curve.fpr[i]), tpr=float(curve.tpr[i])) for i in keep]

    calibration = None
    if is_prob:
        brier = boot_estimate(run, "brier", cal.brier_score(y, s), level, boot_method)
        calibration = calibration_result(y, s, brier, level)
        if not calibration.converged:
            warnings.append(
                "Logistic recalibration did not converge (separation?): "
                "calibration slope and intercept are unreliable."
            )
    else:
        warnings.append("Scores are not probabilities in [0, 1]: calibration was not assessed.")

    subgroups = subgroup_rows(
        y,
        s,
        threshold,
        groups or {},
        level,
        clusters=clusters,
        n_boot=min(n_boot, SUBGROUP_BOOT),
        seed=seed,
        boot_method=boot_method,
    )

    comparison = None
    if other is not None:
        t_b = threshold if compare_threshold is None else compare_threshold
        dt = delong_test(y, s, other, level)
        pdx = paired_decisions(y, s, threshold, other, t_b)
        diff = Estimate(value=dt.difference, lower=dt.lower, upper=dt.upper, method="delong paired")
        z, p_value = dt.z, dt.p_value
        if clustered:
            diff = boot_estimate(run, "auc_diff", dt.difference, level, boot_method)
            sd = float(np.nanstd(run.replicates["auc_diff"], ddof=1))
            z = dt.difference / sd if sd > 0 else 0.0
            p_value = float(2 * sps.norm.sf(abs(z))) if sd > 0 else 1.0
        comparison = ComparisonResult(
            name_a=names[0],
            name_b=names[1],
            auc=AucComparison(
                auc_a=dt.auc_a,
                auc_b=dt.auc_b,
                difference=diff,
                z=z,
                p_value=p_value,
                correlation=dt.correlation,
            ),
            threshold_a=pdx.threshold_a,
            threshold_b=pdx.threshold_b,
            sensitivity_a=pdx.sensitivity_a,
            sensitivity_b=pdx.sensitivity_b,
            specificity_a=pdx.specificity_a,
            specificity_b=pdx.specificity_b,
            mcnemar_sensitivity=McNemarModel(**pdx.sensitivity_test.__dict__),
            mcnemar_specificity=McNemarModel(**pdx.specificity_test.__dict__),
        )
        if clustered:
            warnings.append(clustered_mcnemar_warning(2))

    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos < RECOMMENDED_POSITIVES:
        warnings.append(
            f"Only {n_pos} positive cases: about {RECOMMENDED_POSITIVES} are needed "
            "to estimate a sensitivity near 0.90 within +/-0.05."
        )
    if primary.width is not None and primary.width > WIDE_CI:
        warnings.append(f"The AUC CI is wider than {WIDE_CI}: the cohort is too small to judge.")
    if any(same for *_, same in points[1:]):
        chosen = ", ".join(name.replace("_", "-") for name, _, _, same in points if same)
        warnings.append(
            f"Thresholds chosen on this cohort ({chosen}): their metrics are measured on the "
            "same cases they were chosen on, so they are optimistic. Validate them on new cases."
        )
    warnings.extend(result_flags(y, s, dl.auc, points[1][2]))
    small = [f"{r.variable}={r.level}" for r in subgroups if r.too_small]
    if small:
        warnings.append("Subgroups too small to say anything: " + ", ".join(small))

    n_clusters = None
    if clustered:
        n_clusters = int(np.unique(np.asarray(clusters)).size)
    excl = dict(exclusions or {})
    if any(v < 0 for v in excl.values()):
        raise Invalid("exclusion counts must be non-negative")
    cohort = CohortDescription(
        n_cases=int(y.size),
        n_positive=n_pos,
        n_negative=n_neg,
        prevalence=n_pos / y.size,
        n_clusters=n_clusters,
        score_min=float(s.min()),
        score_max=float(s.max()),
        groups=group_counts(groups or {}, y.size),
        n_excluded=int(sum(excl.values())),
        exclusion_reasons=excl,
    )
    return EvaluationResult(
        level=level,
        n_boot=n_boot,
        seed=seed,
        auc_method=primary.method,
        planning_prevalence=prevalence,
        cohort=cohort,
        auc=primary,
        auc_delong=auc_delong,
        auc_bootstrap=auc_boot,
        operating_points=ops,
        threshold_table=_threshold_table(y, s, is_prob, level),
        roc=roc,
        roc_empirical=roc_emp,
        calibration=calibration,
        subgroups=subgroups,
        comparison=comparison,
        warnings=warnings,
    )
