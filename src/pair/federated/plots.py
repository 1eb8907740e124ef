"""Study figures (matplotlib, Agg), drawn from ``service.summary`` data.

curves: per-round validation AUC and loss per site (local model, solid) with the global model
overlaid (dashed, as each site measured it before training); bars: local-only vs federated
(vs pooled where measured) AUC per site with CIs; matrix: the generalizability matrix (model ×
site AUC); timing: round wall time and per-site training time / bytes (stragglers, traffic).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from pair.evaluation.report.figures import data_uri, png_bytes

Summary = dict[str, Any]


def _series(s: Summary, site: str, key: str) -> tuple[list[int], list[float]]:
    pts = [
        (r["round"], r[key]) for r in s["site_rounds"] if r["site"] == site and r[key] is not None
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def curves_figure(s: Summary) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for i, site in enumerate(s["sites"]):
        color = f"C{i}"
        for ax, key in zip(axes, ("auc", "loss"), strict=True):
            x, y = _series(s, site, f"val_{key}")
            ax.plot(x, y, "-o", color=color, ms=3, label=f"{site} local")
            gx, gy = _series(s, site, f"global_val_{key}")
            ax.plot(gx, gy, "--", color=color, alpha=0.8, label=f"{site} global")
    axes[0].set(xlabel="Round", ylabel="Validation AUC", ylim=(0, 1.01), title="AUC per site")
    axes[1].set(xlabel="Round", ylabel="Validation loss", title="Loss per site")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def bars_figure(s: Summary) -> Figure:
    rows = s["per_site"]
    kinds = [
        ("local_only_auc", "local only"),
        ("local_auc", "site model (last round)"),
        ("federated_auc", "federated"),
        ("pooled_auc", "pooled"),
    ]
    kinds = [k for k in kinds if any(r[k[0]] is not None for r in rows)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    x = np.arange(len(rows))
    width = 0.8 / max(len(kinds), 1)
    for j, (key, label) in enumerate(kinds):
        vals = [r[key] if r[key] is not None else np.nan for r in rows]
        bars = ax.bar(x + j * width, vals, width, label=label)
        if key == "federated_auc":
            lo = [r["federated_auc_lower"] for r in rows]
            hi = [r["federated_auc_upper"] for r in rows]
            if all(v is not None for v in lo + hi):
                err = np.array(
                    [
                        [v - a for v, a in zip(vals, lo, strict=True)],
                        [b - v for v, b in zip(vals, hi, strict=True)],
                    ]
                )
                ax.errorbar(x + j * width, vals, yerr=err, fmt="none", ecolor="black", capsize=3)
        del bars
    ax.set_xticks(x + width * (len(kinds) - 1) / 2, [r["site"] for r in rows])
    ax.set(ylabel="AUC on the site's validation data", ylim=(0, 1.05), title="Per-site AUC")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def matrix_figure(s: Summary) -> Figure | None:
    cells = [c for c in s["cross_site"] if c["auc"] is not None]
    if not cells:
        return None
    models = sorted({c["model"] for c in cells}, key=lambda m: (m != "global", m))
    sites = s["sites"]
    grid = np.full((len(models), len(sites)), np.nan)
    for c in cells:
        if c["evaluated_on"] in sites:
            grid[models.index(c["model"]), sites.index(c["evaluated_on"])] = c["auc"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(sites), 1.2 + 0.6 * len(models)), dpi=100)
    im = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis")
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(
                j, i, f"{v:.3f}", ha="center", va="center", color="white" if v < 0.8 else "black"
            )
    ax.set_xticks(range(len(sites)), sites)
    ax.set_yticks(range(len(models)), models)
    ax.set(
        xlabel="Evaluated on (validation data of)", ylabel="Model", title="Generalizability (AUC)"
    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def _lags(s: Summary, site: str) -> tuple[list[int], list[float]]:
    """Seconds between a site's report and the round's first report (0 = first; stragglers)."""
    first: dict[int, float] = {}
    for r in s["site_rounds"]:
        if r.get("reported_at"):
            first[r["round"]] = min(first.get(r["round"], r["reported_at"]), r["reported_at"])
    pts = sorted(
        (r["round"], r["reported_at"] - first[r["round"]])
        for r in s["site_rounds"]
        if r["site"] == site and r.get("reported_at")
    )
    return [p[0] for p in pts], [p[1] for p in pts]


def timing_figure(s: Summary) -> Figure:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
    rounds = s["rounds"]
    axes[0].bar(
        [r["round"] for r in rounds],
        [r["wall_s"] for r in rounds],
        color="grey",
        label="round wall time",
    )
    for i, site in enumerate(s["sites"]):
        x, y = _series(s, site, "train_seconds")
        axes[0].plot(x, y, "-o", ms=3, color=f"C{i}", label=f"{site} training")
        lx, ly = _lags(s, site)
        axes[1].plot(lx, ly, "-o", ms=3, color=f"C{i}", label=site)
        bx, by = _series(s, site, "bytes_sent")
        axes[2].plot(bx, np.cumsum(by) / 1e6, "-o", ms=3, color=f"C{i}", label=site)
    axes[0].set(xlabel="Round", ylabel="Seconds", title="Round and site training time")
    axes[1].set(xlabel="Round", ylabel="Seconds after first site", title="Stragglers (report lag)")
    axes[2].set(xlabel="Round", ylabel="MB sent (cumulative)", title="Communication per site")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


FIGURES: dict[str, Callable[[Summary], Figure | None]] = {
    "curves": curves_figure,
    "bars": bars_figure,
    "matrix": matrix_figure,
    "timing": timing_figure,
}


def figure_png(s: Summary, name: str) -> bytes | None:
    fig = FIGURES[name](s)
    if fig is None:
        return None
    try:
        return png_bytes(fig)
    finally:
        plt.close(fig)


def figure_uris(s: Summary) -> dict[str, str]:
    out = {}
    for name in FIGURES:
        png = figure_png(s, name)
        if png is not None:
            out[name] = data_uri(png)
    return out
