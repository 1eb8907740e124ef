"""Server-side figures of the performance pages (matplotlib Agg, as the evaluation report's),
each with a caption in words for readers who do not see the image."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

from matplotlib import pyplot as plt

from pair.evaluation.report.figures import data_uri, png_bytes
from pair.registry.performance.service import SiteRow, Summary


@dataclass(frozen=True)
class Figure:
    uri: str
    caption: str


def _ci(lower: float | None, upper: float | None) -> str:
    return "" if lower is None or upper is None else f" (95% CI {lower:.3f} to {upper:.3f})"


def forest(s: Summary) -> Figure | None:
    """Per-site estimates with their intervals (squares sized by cases), the pooled diamond and
    the use case's minimum as a dashed line."""
    if not s.sites and s.pooled is None:
        return None
    labels = [f"{r.name} ({r.period}, n={r.n if r.n is not None else '?'})" for r in s.sites]
    height = 2.0 + 0.42 * (len(s.sites) + 2)
    fig, ax = plt.subplots(figsize=(7.5, height), dpi=110)
    ys: list[float] = [float(y) for y in range(len(s.sites) + 1, 1, -1)]
    for y, r in zip(ys, s.sites, strict=True):
        if r.lower is not None and r.upper is not None:
            ax.hlines(y, r.lower, r.upper, color="black", lw=1.2)
        size = 30 + min(150, (r.n or 0) / 4)
        ax.scatter([r.value], [y], marker="s", s=size, color="tab:blue", zorder=3)
    if s.pooled is not None:
        p = s.pooled
        ax.fill(
            [p.lower, p.value, p.upper, p.value],
            [0.6, 0.85, 0.6, 0.35],
            color="tab:red",
            zorder=3,
            label=f"pooled (random effects), I² = {p.i2:.0f}%",
        )
        labels.append(f"Pooled, {p.k} sites")
        ys.append(0.6)
    if s.threshold is not None and s.threshold.metric == s.metric:
        ax.axvline(s.threshold.value, ls="--", color="tab:orange", label="use-case minimum")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel(s.metric_label)
    ax.set_ylim(0, max(ys) + 0.8)
    ax.set_title(f"{s.algorithm_name} {s.version}: {s.metric_label} by site", fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # below the axis: never over a site or the diamond
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=7)
    fig.tight_layout()
    uri = data_uri(png_bytes(fig))
    plt.close(fig)
    parts = [
        f"Forest plot of {s.metric_label} for {s.algorithm_name} version {s.version}.",
        *(
            f"{r.name}, period {r.period}: {r.value:.3f}{_ci(r.lower, r.upper)}"
            f"{'' if r.pooled_in else ', not pooled (no interval)'}."
            for r in s.sites
        ),
    ]
    if s.other_sites:
        parts.append(f"{s.other_sites} other site(s) are pooled but not shown by name.")
    if s.pooled is not None:
        p = s.pooled
        parts.append(
            f"Random-effects pooled estimate (DerSimonian-Laird, {p.scale} scale) from {p.k} "
            f"sites: {p.value:.3f}{_ci(p.lower, p.upper)}; tau² {p.tau2:.4f}, "
            f"Q {p.q:.2f}, I² {p.i2:.1f}%."
        )
    if s.threshold is not None and s.threshold.metric == s.metric:
        parts.append(f"Dashed line: minimum {s.threshold.value:g} of {s.threshold.use_case}.")
    return Figure(uri, " ".join(parts))


def drift(s: Summary, site: SiteRow) -> Figure:
    """One site's estimate per period with its interval, the threshold line, and the lower
    CUSUM on a second axis when the threshold is on this metric."""
    pts = site.series
    xs = list(range(len(pts)))
    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=110)
    ax.errorbar(
        xs,
        [p.value for p in pts],
        yerr=[
            [p.value - (p.lower if p.lower is not None else p.value) for p in pts],
            [(p.upper if p.upper is not None else p.value) - p.value for p in pts],
        ],
        fmt="o-",
        color="tab:blue",
        capsize=3,
        label=s.metric_label,
    )
    flagged = [i for i, p in enumerate(pts) if p.below_minimum or p.cusum_alarm]
    if flagged:
        ax.scatter(
            flagged,
            [pts[i].value for i in flagged],
            s=90,
            facecolors="none",
            edgecolors="tab:red",
            zorder=4,
            label="alert",
        )
    threshold = s.threshold if s.threshold is not None and s.threshold.metric == s.metric else None
    if threshold is not None:
        ax.axhline(threshold.value, ls="--", color="tab:orange", label="use-case minimum")
    ax.set_xticks(xs, [p.period for p in pts], fontsize=8)
    ax.set_ylabel(s.metric_label)
    ax.set_title(f"{site.name}: {s.metric_label} over time", fontsize=10)
    cusum = [p.cusum for p in pts if p.cusum is not None]
    if threshold is not None and len(cusum) == len(pts):
        ax2 = ax.twinx()
        ax2.step(xs, cusum, where="mid", color="grey", alpha=0.6, label="lower CUSUM")
        ax2.set_ylabel("lower CUSUM", color="grey")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize=7)
    fig.tight_layout()
    uri = data_uri(png_bytes(fig))
    plt.close(fig)
    words = "; ".join(
        f"{p.period}: {p.value:.3f}{_ci(p.lower, p.upper)}"
        + (f", CUSUM {p.cusum:.2f}" if p.cusum is not None else "")
        + (" (alert)" if p.below_minimum or p.cusum_alarm else "")
        for p in pts
    )
    caption = f"{s.metric_label} of {site.name} by period: {words}."
    if threshold is not None:
        caption += f" Dashed line: minimum {threshold.value:g} of {threshold.use_case}."
    return Figure(uri, caption)
