"""Figures and checklist answers for multiclass evaluations (``MulticlassResult``)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from pair.evaluation.report.checklist import fmt
from pair.evaluation.report.figures import finish_reliability_axes, finish_roc_axes
from pair.evaluation.result import MulticlassResult


def confusion_figure(r: MulticlassResult) -> Figure:
    """Heatmap of the confusion matrix, coloured by row share (sensitivity on the diagonal)."""
    cm = np.asarray(r.evaluation.confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(r.classes)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.6, 1.0 * k + 1.8), dpi=110)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(k))
    ax.set_xticklabels(r.classes, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k))
    ax.set_yticklabels(r.classes, fontsize=8)
    ax.set(xlabel="Predicted class", ylabel="Reference class", title="Confusion matrix")
    fig.tight_layout()
    return fig


def roc_figure(r: MulticlassResult) -> Figure | None:
    """One-vs-rest ROC curve of each class's probability."""
    curves = [c for c in r.roc if c.points]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    for c in curves:
        auc = "n/a" if c.auc is None else f"{c.auc:.3f}"
        ax.step(
            [p.fpr for p in c.points],
            [p.tpr for p in c.points],
            where="post",
            label=f"{c.name} vs rest, AUC {auc}",
        )
    return finish_roc_axes(fig, ax, "One-vs-rest ROC curves")


def calibration_figure(r: MulticlassResult) -> Figure | None:
    """Reliability diagram of each class's one-vs-rest probability (10 equal-width bins)."""
    if r.calibration is None or not r.calibration.per_class:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    for c in r.calibration.per_class:
        bins = c.calibration.reliability_uniform.bins
        ece = c.calibration.reliability_uniform.ece
        ax.plot(
            [b.mean_predicted for b in bins],
            [b.observed for b in bins],
            marker="o",
            ms=3,
            label=f"{c.name} vs rest, ECE {ece:.3f}",
        )
    return finish_reliability_axes(fig, ax, "One-vs-rest reliability")


def forest_figure(r: MulticlassResult) -> Figure | None:
    """Accuracy with CI per subgroup; hollow markers for subgroups too small to interpret."""
    rows = [s for s in r.subgroups if s.accuracy.value is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 0.35 * len(rows) + 1.3), dpi=110)
    for i, s in enumerate(reversed(rows)):
        v = s.accuracy.value or 0.0
        lo = s.accuracy.lower if s.accuracy.lower is not None else v
        hi = s.accuracy.upper if s.accuracy.upper is not None else v
        ax.plot([lo, hi], [i, i], color="black", lw=1)
        ax.plot(v, i, "o", color="black", mfc="white" if s.too_small else "black")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{s.variable}={s.level} (n={s.n})" for s in reversed(rows)], fontsize=8)
    acc = r.evaluation.accuracy.value
    if acc is not None:
        ax.axvline(acc, ls="--", color="tab:blue", lw=1, label="overall accuracy")
        ax.legend(loc="lower left", fontsize=8)
    ax.set(xlabel="Accuracy", xlim=(0, 1.0), title="Subgroups (hollow = too small)")
    fig.tight_layout()
    return fig


def multiclass_figures(r: MulticlassResult) -> dict[str, Figure]:
    figs: dict[str, Figure | None] = {
        "confusion": confusion_figure(r),
        "roc": roc_figure(r),
        "calibration": calibration_figure(r),
        "subgroups": forest_figure(r),
    }
    return {k: v for k, v in figs.items() if v is not None}


def checklist_answer(key: str, r: MulticlassResult) -> str | None:
    """The ``result.<key>`` prefills of the CLAIM-style checklist for a multiclass result."""
    c = r.cohort
    e = r.evaluation
    pct = f"{100 * r.level:g}%"
    if key == "exclusions":
        if not c.n_excluded:
            return f"{c.n_cases} cases analysed; no exclusions recorded."
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(c.exclusion_reasons.items()))
        return f"{c.n_cases} cases analysed; {c.n_excluded} excluded ({reasons})."
    if key == "level_of_analysis":
        if c.n_clusters and c.n_clusters < c.n_cases:
            return (
                f"Image level: {c.n_cases} images from {c.n_clusters} patients; CIs by "
                "patient-clustered bootstrap."
            )
        return f"Case level: {c.n_cases} cases, treated as independent."
    if key == "metrics":
        kappas = "Cohen's kappa" + (
            ", linear and quadratic weighted kappa (ordinal classes)" if r.ordinal else ""
        )
        calibration = (
            "; multiclass Brier score and per class one-vs-rest Brier, ECE, calibration slope "
            "and intercept"
            if r.calibration
            else ""
        )
        return (
            f"Prediction = class with the highest probability. Confusion matrix; accuracy; "
            f"{kappas}; per class one-vs-rest sensitivity, specificity, PPV, NPV and AUC"
            f"{calibration}."
        )
    if key == "statistics":
        if r.clustered:
            return (
                f"{pct} CIs for all metrics by patient-clustered bootstrap ({r.n_boot} "
                f"resamples, percentile, seed {r.seed})."
            )
        brier = (
            f"; Brier scores by bootstrap ({r.n_boot} resamples, percentile, seed {r.seed}), "
            "calibration slope and intercept by Wald"
            if r.calibration
            else ""
        )
        return (
            f"{pct} CIs: proportions by Wilson score, one-vs-rest AUC by DeLong, kappa by the "
            f"Fleiss-Cohen-Everitt large-sample variance (Wald){brier}."
        )
    if key == "subgroups":
        names = sorted({s.variable for s in r.subgroups})
        return ("Subgroups (accuracy, kappa): " + ", ".join(names)) if names else None
    if key == "cohort":
        text = f"{c.n_cases} cases; reference classes: " + ", ".join(
            f"{k} {v}" for k, v in c.class_counts.items()
        )
        for var, levels in c.groups.items():
            text += f". {var}: " + ", ".join(f"{k} {v}" for k, v in levels.items())
        return text + "."
    if key == "headline":
        text = f"Accuracy {fmt(e.accuracy)}; Cohen's kappa {fmt(e.kappa)}"
        if r.kappa_linear is not None:
            text += f"; linear weighted kappa {fmt(r.kappa_linear)}"
        if r.macro_auc is not None:
            text += f"; macro-average one-vs-rest AUC {r.macro_auc:.3f}"
        return text + "."
    if key == "comparison":
        if r.comparison is None:
            return None
        cmp = r.comparison
        return (
            f"{cmp.name_a} vs {cmp.name_b}: accuracy difference {fmt(cmp.accuracy_difference)} "
            f"(McNemar p = {cmp.mcnemar.p_value:.3g}); kappa difference "
            f"{fmt(cmp.kappa_difference)}; per-class AUC differences: "
            + "; ".join(f"{d.name} {fmt(d.difference)}" for d in cmp.per_class)
            + "."
        )
    if key == "warnings":
        return " ".join(r.warnings) if r.warnings else None
    raise KeyError(key)
