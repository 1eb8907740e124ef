"""One evaluation task interface with a binary and a multiclass implementation.

Every producer of a result (``pair offline-evaluation evaluate``, evaluation runs) calls the
task's ``evaluate`` with the same case table (``Cases``) and options, and every consumer of a
result (terminal tables, report figures and template, checklist, feedback, PDF summary page)
asks ``task_for(result)`` for the task and calls the same methods, so adding a task means
adding one implementation here rather than a branch in each producer and consumer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
from matplotlib.figure import Figure
from rich.table import Table

from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.evaluate_multiclass import evaluate_classes
from pair.evaluation.feedback_payload import binary_payload, multiclass_payload
from pair.evaluation.report import figures
from pair.evaluation.report import multiclass as mc_report
from pair.evaluation.report.checklist import (
    Checklist,
    binary_checklist_answer,
    fmt,
    prefill_checklist,
)
from pair.evaluation.report.context import EvaluationContext
from pair.evaluation.result import AnyResult, EvaluationResult, MulticlassResult, TaskName
from pair.evaluation.stats.bootstrap import Method
from pair.evaluation.tables import (
    binary_summary_lines,
    confusion_table,
    main_table,
    multiclass_summary_lines,
    multiclass_table,
)

R = TypeVar("R", EvaluationResult, MulticlassResult)
R_contra = TypeVar("R_contra", EvaluationResult, MulticlassResult, contravariant=True)


@dataclass(frozen=True)
class Cases:
    """The case table every task evaluates, one entry per case."""

    y: np.ndarray  # the reference: 0/1 (binary) or the class index (multiclass)
    output: np.ndarray  # the algorithm: a score (binary) or a probability vector (multiclass)
    groups: Mapping[str, Any] | None = None  # subgroup column -> one value per case
    clusters: np.ndarray | None = None  # patient ids (several cases per patient)
    compare: np.ndarray | None = None  # a comparator's output, same shape as ``output``
    names: tuple[str, str] = ("algorithm", "comparator")
    exclusions: Mapping[str, int] | None = None  # reason -> cases left out before evaluation


@dataclass(frozen=True)
class Options:
    """How to evaluate; the task-specific fields are read only by their task."""

    n_boot: int = 2000
    seed: int = 0
    # binary: the declared operating threshold and what else to report
    threshold: float = 0.5
    threshold_source: str = "declared threshold"  # or "default threshold 0.5 (not declared)"
    compare_threshold: float | None = None
    prevalence: float | None = None
    target_sensitivity: float | None = None
    target_specificity: float | None = None  # a use case plan's rule (chosen on the data)
    fixed_threshold: float | None = None  # a use case plan's fixed operating point
    boot_method: Method = "percentile"
    # multiclass: the output classes, in probability-vector order
    classes: tuple[str, ...] = ()
    class_labels: tuple[str, ...] | None = None
    ordinal: bool = False


class EvaluationTask(Protocol[R_contra]):
    """What every task offers for its result type (``evaluate`` makes one)."""

    name: ClassVar[TaskName]
    template: ClassVar[str]  # the HTML report template

    def evaluate(self, cases: Cases, options: Options) -> EvaluationResult | MulticlassResult: ...

    def tables(self, r: R_contra) -> list[Table]: ...

    def summary_lines(self, r: R_contra) -> list[str]: ...

    def figures(self, r: R_contra) -> dict[str, Figure]: ...

    def checklist_answer(self, key: str, r: R_contra) -> str | None: ...

    def checklist(self, context: EvaluationContext, r: R_contra) -> Checklist: ...

    def feedback(
        self,
        r: R_contra,
        context: EvaluationContext,
        *,
        site: dict[str, str] | None,
        comment: str | None,
        min_cell: int,
    ) -> dict[str, Any]: ...

    def summary_page(self, r: R_contra, context: EvaluationContext) -> list[str]: ...


class _Task(Generic[R]):
    """Shared behaviour: the checklist is the same for each task, only the answers differ."""

    def checklist_answer(self, key: str, r: R) -> str | None:
        raise KeyError(key)  # overridden by each task

    def checklist(self, context: EvaluationContext, r: R) -> Checklist:
        return prefill_checklist(context, lambda key: self.checklist_answer(key, r))


class BinaryTask(_Task[EvaluationResult]):
    """One score per case against a positive/negative reference."""

    name: ClassVar[TaskName] = "binary"
    template: ClassVar[str] = "evaluation_report.html"

    def evaluate(self, cases: Cases, options: Options) -> EvaluationResult:
        return evaluate_scores(
            cases.y,
            cases.output,
            options.threshold,
            groups=cases.groups,
            clusters=cases.clusters,
            prevalence=options.prevalence,
            target_sensitivity=options.target_sensitivity,
            target_specificity=options.target_specificity,
            fixed_threshold=options.fixed_threshold,
            threshold_source=options.threshold_source,
            compare_scores=cases.compare,
            compare_threshold=options.compare_threshold,
            names=cases.names,
            n_boot=options.n_boot,
            seed=options.seed,
            boot_method=options.boot_method,
            exclusions=cases.exclusions,
        )

    def tables(self, r: EvaluationResult) -> list[Table]:
        return [main_table(r)]

    def summary_lines(self, r: EvaluationResult) -> list[str]:
        return binary_summary_lines(r)

    def figures(self, r: EvaluationResult) -> dict[str, Figure]:
        return figures.binary_figures(r)

    def checklist_answer(self, key: str, r: EvaluationResult) -> str | None:
        return binary_checklist_answer(key, r)

    def feedback(
        self,
        r: EvaluationResult,
        context: EvaluationContext,
        *,
        site: dict[str, str] | None,
        comment: str | None,
        min_cell: int,
    ) -> dict[str, Any]:
        return binary_payload(r, context, site, comment, min_cell)

    def summary_page(self, r: EvaluationResult, context: EvaluationContext) -> list[str]:
        op = r.operating_point("manifest")
        return [
            context.title,
            f"Algorithm: {context.algorithm or 'not stated'}",
            f"Cases: {r.cohort.n_cases} ({r.cohort.n_positive} positive)",
            f"AUC: {fmt(r.auc)} [{r.auc.method}]",
            f"Threshold {op.threshold:g}: sensitivity {fmt(op.sensitivity)}, "
            f"specificity {fmt(op.specificity)}",
            "",
            "Warnings:",
            *[f"- {w}" for w in r.warnings],
        ]


class MulticlassTask(_Task[MulticlassResult]):
    """A probability vector per case against one reference class (argmax decision)."""

    name: ClassVar[TaskName] = "multiclass"
    template: ClassVar[str] = "evaluation_report_multiclass.html"

    def evaluate(self, cases: Cases, options: Options) -> MulticlassResult:
        return evaluate_classes(
            cases.y,
            cases.output,
            list(options.classes),
            class_labels=None if options.class_labels is None else list(options.class_labels),
            ordinal=options.ordinal,
            groups=cases.groups,
            clusters=cases.clusters,
            n_boot=options.n_boot,
            seed=options.seed,
            exclusions=cases.exclusions,
            compare_probabilities=cases.compare,
            names=cases.names,
        )

    def tables(self, r: MulticlassResult) -> list[Table]:
        return [multiclass_table(r), confusion_table(r)]

    def summary_lines(self, r: MulticlassResult) -> list[str]:
        return multiclass_summary_lines(r)

    def figures(self, r: MulticlassResult) -> dict[str, Figure]:
        return mc_report.multiclass_figures(r)

    def checklist_answer(self, key: str, r: MulticlassResult) -> str | None:
        return mc_report.checklist_answer(key, r)

    def feedback(
        self,
        r: MulticlassResult,
        context: EvaluationContext,
        *,
        site: dict[str, str] | None,
        comment: str | None,
        min_cell: int,
    ) -> dict[str, Any]:
        return multiclass_payload(r, context, site, comment, min_cell)

    def summary_page(self, r: MulticlassResult, context: EvaluationContext) -> list[str]:
        return [
            context.title,
            f"Algorithm: {context.algorithm or 'not stated'}",
            f"Cases: {r.cohort.n_cases}",
            mc_report.checklist_answer("headline", r) or "",
            "",
            "Warnings:",
            *[f"- {w}" for w in r.warnings],
        ]


TASKS: Mapping[TaskName, EvaluationTask[Any]] = {
    "binary": BinaryTask(),
    "multiclass": MulticlassTask(),
}


def task_for(result: AnyResult) -> EvaluationTask[Any]:
    """The task that produced ``result`` (each result model names its task)."""
    return TASKS[result.task]


def result_tables(r: AnyResult) -> list[Table]:
    """What ``pair evaluate`` prints for either kind of result."""
    return task_for(r).tables(r)


def summary_lines(r: AnyResult) -> list[str]:
    """The lines printed under the tables for either kind of result."""
    return task_for(r).summary_lines(r)


__all__: Sequence[str] = [
    "TASKS",
    "BinaryTask",
    "Cases",
    "EvaluationTask",
    "MulticlassTask",
    "Options",
    "result_tables",
    "summary_lines",
    "task_for",
]
