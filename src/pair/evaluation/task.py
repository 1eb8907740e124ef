"""One evaluation task interface with a binary and a multiclass implementation.

Every consumer of a result (terminal tables, report figures and template, checklist, feedback,
PDF summary page) asks ``task_for(result)`` for the task and calls the same methods, so adding
a task means adding one implementation here rather than a branch in each consumer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from matplotlib.figure import Figure
from rich.table import Table

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
from pair.evaluation.tables import (
    binary_summary_lines,
    confusion_table,
    main_table,
    multiclass_summary_lines,
    multiclass_table,
)

R = TypeVar("R", EvaluationResult, MulticlassResult)
R_contra = TypeVar("R_contra", EvaluationResult, MulticlassResult, contravariant=True)


class EvaluationTask(Protocol[R_contra]):
    """What every task offers for its result type."""

    name: ClassVar[TaskName]
    template: ClassVar[str]  # the HTML report template

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
    "EvaluationTask",
    "MulticlassTask",
    "result_tables",
    "summary_lines",
    "task_for",
]
