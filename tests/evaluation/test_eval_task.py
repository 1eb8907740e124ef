"""One task interface: every consumer of a result dispatches through ``task_for``."""

from __future__ import annotations

import re
from pathlib import Path

import pair.evalruns
import pair.evaluation
from pair.evaluation.result import EvaluationResult, MulticlassResult
from pair.evaluation.task import TASKS, BinaryTask, MulticlassTask

METHODS = ("tables", "summary_lines", "figures", "checklist", "checklist_answer", "feedback")


def test_each_result_model_names_its_task() -> None:
    assert isinstance(TASKS[EvaluationResult.task], BinaryTask)
    assert isinstance(TASKS[MulticlassResult.task], MulticlassTask)
    for task in TASKS.values():
        assert all(callable(getattr(task, m)) for m in METHODS)
        assert task.template.endswith(".html")
    # the task is a class attribute, not a field: the binary JSON keeps no ``kind``
    assert "task" not in EvaluationResult.model_fields


def test_no_result_type_branches_outside_the_models() -> None:
    """Consumers ask the task; nothing branches on the result class."""
    pattern = re.compile(r"isinstance\([^)]*(MulticlassResult|EvaluationResult)")
    offenders = []
    for pkg in (pair.evaluation, pair.evalruns):
        for path in Path(pkg.__path__[0]).rglob("*.py"):
            if pattern.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path))
    assert offenders == []
