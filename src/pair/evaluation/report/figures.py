"""Matplotlib figures (Agg backend, no display needed) for the evaluation report."""

from __future__ import annotations

import base64
import io
from functools import cache
from importlib import resources
from typing import Any

import matplotlib
import yaml

matplotlib.use("Agg")

from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from pair.evaluation.result import EvaluationResult


def finish_roc_axes(fig: Figure, ax: Any, title: str) -> Figure:
    """Chance diagonal, unit axes labelled 1 - specificity / sensitivity, legend lower right."""
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="Sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def finish_reliability_axes(fig: Figure, ax: Any, title: str) -> Figure:
    """Perfect-calibration diagonal, unit axes of predicted vs observed, legend upper left."""
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    ax.set(
        xlabel="Mean predicted probability",
        ylabel="Observed frequency",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=title,
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def roc_figure(r: EvaluationResult) -> Figure:
    """Empirical ROC, the bootstrap band of sensitivity at fixed FPR and the operating points."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    band = [p for p in r.roc if p.tpr_lower is not None and p.tpr_upper is not None]
    if band:
        ax.fill_between(
            [p.fpr for p in band],
            [p.tpr_lower or 0.0 for p in band],
            [p.tpr_upper or 0.0 for p in band],
            step="post",
            alpha=0.25,
            color="tab:blue",
            label=f"{100 * r.level:g}% bootstrap band",
        )
    ax.step(
        [p.fpr for p in r.roc_empirical],
        [p.tpr for p in r.roc_empirical],
        where="post",
        color="tab:blue",
        label=f"ROC, AUC {r.auc.value:.3f}",
    )
    markers = {
        "manifest": "o",
        "youden": "s",
        "target_sensitivity": "^",
        "target_specificity": "v",
        "fixed": "D",
    }
    for op in r.operating_points:
        if op.sensitivity.value is None or op.specificity.value is None:
            continue
        ax.plot(
            1 - op.specificity.value,
            op.sensitivity.value,
            markers.get(op.name, "D"),
            color="black",
            label=f"{op.name} (t={op.threshold:.3g})",
        )
    return finish_roc_axes(fig, ax, "ROC curve")


def calibration_figure(r: EvaluationResult) -> Figure | None:
    if r.calibration is None:
        return None
    rel = r.calibration.reliability_uniform
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    xs = [b.mean_predicted for b in rel.bins]
    ys = [b.observed for b in rel.bins]
    lo = [
        b.observed - (b.observed_lower if b.observed_lower is not None else b.observed)
        for b in rel.bins
    ]
    hi = [
        (b.observed_upper if b.observed_upper is not None else b.observed) - b.observed
        for b in rel.bins
    ]
    ax.errorbar(
        xs,
        ys,
        yerr=[lo, hi],
        fmt="o-",
        capsize=3,
        label=f"observed (ECE {rel.ece:.3f}, {rel.n_bins} equal-width bins)",
    )
    s = r.calibration.slope.value
    return finish_reliability_axes(
        fig, ax, f"Calibration (slope {s:.2f})" if s is not None else "Calibration"
    )


def forest_figure(r: EvaluationResult) -> Figure | None:
    """AUC with CI per subgroup; hollow markers for subgroups too small to interpret."""
    rows = [s for s in r.subgroups if s.auc is not None and s.auc.value is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 0.35 * len(rows) + 1.3), dpi=110)
    for i, s in enumerate(reversed(rows)):
        assert s.auc is not None and s.auc.value is not None
        lo = s.auc.lower if s.auc.lower is not None else s.auc.value
        hi = s.auc.upper if s.auc.upper is not None else s.auc.value
        ax.plot([lo, hi], [i, i], color="black", lw=1)
        ax.plot(s.auc.value, i, "o", color="black", mfc="white" if s.too_small else "black")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{s.variable}={s.level} (n={s.n})" for s in reversed(rows)], fontsize=8)
    if r.auc.value is not None:
        ax.axvline(r.auc.value, ls="--", color="tab:blue", lw=1, label="overall AUC")
    ax.set(xlabel="AUC", xlim=(0, 1.0), title="Subgroups (hollow = too small)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def binary_figures(r: EvaluationResult) -> dict[str, Figure]:
    """ROC, calibration and subgroup forest plot (the last two only when there is data)."""
    figs: dict[str, Figure | None] = {
        "roc": roc_figure(r),
        "calibration": calibration_figure(r),
        "subgroups": forest_figure(r),
    }
    return {k: v for k, v in figs.items() if v is not None}


@cache
def _all_captions() -> dict[str, dict[str, str]]:
    text = resources.files("pair.evaluation").joinpath("data/figure-captions.yaml").read_text()
    data = yaml.safe_load(text)
    return {
        task: {name: " ".join(str(c).split()) for name, c in figs.items()}
        for task, figs in data.items()
        if task != "version"
    }


def captions(task: str) -> dict[str, str]:
    """Each figure's caption in words for ``task`` (``data/figure-captions.yaml``)."""
    return _all_captions()[task]


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def close(figs: dict[str, Figure]) -> None:
    for fig in figs.values():
        plt.close(fig)
