"""Prefill the versioned CLAIM-style checklist (data/claim_checklist.yaml) from what PAIR knows."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel

from pair.evaluation.report.context import EvaluationContext
from pair.evaluation.result import Estimate, EvaluationResult

Answer = Callable[[str], str | None]


class ChecklistItem(BaseModel):
    id: str
    section: str
    topic: str
    answer: str | None
    prefilled: bool


class Checklist(BaseModel):
    name: str
    version: str
    items: list[ChecklistItem]


@lru_cache(maxsize=1)
def checklist_definition() -> dict[str, Any]:
    text = (
        resources.files("pair.evaluation")
        .joinpath("data/claim_checklist.yaml")
        .read_text(encoding="utf-8")
    )
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def fmt(e: Estimate | None, digits: int = 3) -> str:
    """'0.912 (0.880-0.944)' or 'n/a'."""
    if e is None or e.value is None:
        return "n/a"
    if e.lower is None or e.upper is None:
        return f"{e.value:.{digits}f}"
    return f"{e.value:.{digits}f} ({e.lower:.{digits}f}\u2013{e.upper:.{digits}f})"


def binary_checklist_answer(key: str, r: EvaluationResult) -> str | None:
    c = r.cohort
    op = r.operating_point("manifest")
    pct = f"{100 * r.level:g}%"
    if key == "exclusions":
        if not c.n_excluded:
            return f"{c.n_cases} cases analysed; no exclusions recorded."
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(c.exclusion_reasons.items()))
        return f"{c.n_cases} cases analysed; {c.n_excluded} excluded ({reasons})."
    if key == "level_of_analysis":
        if c.n_clusters:
            return (
                f"Image level: {c.n_cases} images from {c.n_clusters} patients; CIs by "
                "patient-clustered bootstrap."
            )
        return f"Case level: {c.n_cases} cases, treated as independent."
    if key == "metrics":
        return (
            "AUC; sensitivity, specificity, PPV, NPV, accuracy, F1 at the declared threshold "
            "and chosen operating points; Brier score, ECE, calibration slope and intercept."
        )
    if key == "statistics":
        return (
            f"{pct} CIs: AUC by {r.auc.method}; proportions by Wilson score (or clustered "
            f"bootstrap); F1 and Brier by bootstrap ({r.n_boot} resamples, seed {r.seed}); "
            "paired comparison by DeLong test and McNemar."
        )
    if key == "subgroups":
        names = sorted({s.variable for s in r.subgroups})
        return ("Subgroups: " + ", ".join(names)) if names else None
    if key == "cohort":
        text = (
            f"{c.n_cases} cases, {c.n_positive} positive, {c.n_negative} negative "
            f"(prevalence {c.prevalence:.3f})."
        )
        for var, levels in c.groups.items():
            text += f" {var}: " + ", ".join(f"{k} {v}" for k, v in levels.items()) + "."
        return text
    if key == "headline":
        return (
            f"AUC {fmt(r.auc)}; at threshold {op.threshold:g}: sensitivity "
            f"{fmt(op.sensitivity)}, specificity {fmt(op.specificity)}."
        )
    if key == "comparison":
        if r.comparison is None:
            return None
        d = r.comparison.auc
        return (
            f"{r.comparison.name_a} vs {r.comparison.name_b}: AUC difference "
            f"{fmt(d.difference)}, DeLong p = {d.p_value:.3g}."
        )
    if key == "warnings":
        return " ".join(r.warnings) if r.warnings else None
    raise KeyError(key)


def prefill_checklist(context: EvaluationContext, answer_from_result: Answer) -> Checklist:
    """The checklist with ``context.*`` items from the context and ``result.*`` items from
    ``answer_from_result`` (the task's answer for one key)."""
    spec = checklist_definition()
    items = []
    for it in spec["items"]:
        source = it.get("prefill")
        answer: str | None = None
        if source and source.startswith("context."):
            value = getattr(context, source.removeprefix("context."))
            answer = None if value in (None, "") else str(value)
        elif source and source.startswith("result."):
            answer = answer_from_result(source.removeprefix("result."))
        items.append(
            ChecklistItem(
                id=str(it["id"]),
                section=it["section"],
                topic=it["topic"],
                answer=answer,
                prefilled=answer is not None,
            )
        )
    return Checklist(name=spec["name"], version=str(spec["version"]), items=items)
