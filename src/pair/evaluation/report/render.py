"""Render the self-contained HTML report and export PNG figures and an optional PDF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
from matplotlib import pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages

from pair.evaluation.report import figures
from pair.evaluation.report.checklist import fmt
from pair.evaluation.report.context import EvaluationContext
from pair.evaluation.result import AnyResult
from pair.evaluation.task import task_for

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("pair.evaluation", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)
_env.filters["ci"] = fmt


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


_env.filters["num"] = _num


def render_html(
    result: AnyResult, context: EvaluationContext, pngs: dict[str, bytes] | None = None
) -> str:
    """One HTML page with inline PNG figures: no external files, scripts or fonts."""
    task = task_for(result)
    if pngs is None:
        figs = task.figures(result)
        try:
            pngs = {name: figures.png_bytes(fig) for name, fig in figs.items()}
        finally:
            figures.close(figs)
    images = {name: figures.data_uri(png) for name, png in pngs.items()}
    return _env.get_template(task.template).render(
        r=result,
        ctx=context,
        images=images,
        captions=figures.captions(result.task),
        checklist=task.checklist(context, result),
    )


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    figures: dict[str, Path]
    pdf: Path | None
    json: Path


def write_report(
    result: AnyResult, context: EvaluationContext, out_dir: Path, *, pdf: bool = False
) -> ReportFiles:
    """Write report.html, result.json, figures/<name>.png and (optionally) report.pdf."""
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / "report.html"
    js = out_dir / "result.json"
    js.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    figs = task_for(result).figures(result)
    paths: dict[str, Path] = {}
    pdf_path = out_dir / "report.pdf" if pdf else None
    try:
        pngs = {name: figures.png_bytes(fig) for name, fig in figs.items()}
        for name, png in pngs.items():
            paths[name] = fig_dir / f"{name}.png"
            paths[name].write_bytes(png)
        html.write_text(render_html(result, context, pngs), encoding="utf-8")
        if pdf_path is not None:
            with PdfPages(pdf_path) as pages:
                pages.savefig(_summary_page(result, context))
                for fig in figs.values():
                    pages.savefig(fig)
    finally:
        figures.close(figs)
        plt.close("all")
    return ReportFiles(html, paths, pdf_path, js)


def _summary_page(r: AnyResult, ctx: EvaluationContext) -> plt.Figure:
    fig = plt.figure(figsize=(8.27, 11.69))
    lines = task_for(r).summary_page(r, ctx)
    fig.text(0.06, 0.95, "\n".join(lines), va="top", fontsize=9, wrap=True)
    return fig
