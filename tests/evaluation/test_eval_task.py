"""One task interface: every consumer of a result dispatches through ``task_for``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import pair.evaluation
from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.evaluate_multiclass import evaluate_classes
from pair.evaluation.result import EvaluationResult, MulticlassResult
from pair.evaluation.stats.bootstrap import patients_repeat
from pair.evaluation.stats.compare import clustered_mcnemar_warning
from pair.evaluation.task import TASKS, BinaryTask, Cases, MulticlassTask, Options
from tests.evaluation.eval_reference import synthetic

STAMP = {"created_at"}  # when the result was made
METHODS = (
    "evaluate",
    "tables",
    "summary_lines",
    "figures",
    "checklist",
    "checklist_answer",
    "feedback",
)


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
    for pkg in (pair.evaluation,):  # includes evaluation/runs
        for path in Path(pkg.__path__[0]).rglob("*.py"):
            if pattern.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path))
    assert offenders == []


def test_evaluate_is_a_task_method_and_the_one_way_to_a_result() -> None:
    """Both tasks evaluate the same case table shape; producers (offline CLI, runs) call the
    task, not the statistics functions behind it."""
    y, p = synthetic(80, 5)
    patients = np.repeat(np.arange(40), 2)
    cases = Cases(y, p, clusters=patients, names=("a", "b"))
    binary = TASKS["binary"].evaluate(cases, Options(n_boot=100, seed=3, threshold=0.4))
    direct = evaluate_scores(y, p, 0.4, clusters=patients, names=("a", "b"), n_boot=100, seed=3)
    assert binary.task == "binary" and binary.model_dump(exclude=STAMP) == direct.model_dump(
        exclude=STAMP
    )
    probs = np.column_stack([1 - p, p])
    options = Options(n_boot=100, seed=3, classes=("neg", "pos"), class_labels=("N", "P"))
    multi = TASKS["multiclass"].evaluate(Cases(y, probs, clusters=patients), options)
    expected = evaluate_classes(
        y, probs, ["neg", "pos"], class_labels=["N", "P"], clusters=patients, n_boot=100, seed=3
    )
    assert multi.task == "multiclass" and multi.model_dump(exclude=STAMP) == expected.model_dump(
        exclude=STAMP
    )
    root = Path(pair.evaluation.__path__[0])
    callers = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if re.search(r"\bevaluate_(scores|classes)\(", path.read_text(encoding="utf-8"))
        and path.name not in ("evaluate.py", "evaluate_multiclass.py", "task.py")
    )
    assert callers == []


def test_one_clustering_rule_and_one_mcnemar_caveat_for_both_tasks() -> None:
    """Patients repeat -> clustered intervals, and the same McNemar caveat in both tasks."""
    y, p = synthetic(120, 3)
    patients = np.repeat(np.arange(60), 2)
    assert patients_repeat(patients) and not patients_repeat(np.arange(120))
    other = np.clip(p + np.random.default_rng(1).normal(0, 0.2, p.size), 0, 1)
    binary = evaluate_scores(y, p, 0.5, clusters=patients, compare_scores=other, n_boot=200, seed=0)
    assert clustered_mcnemar_warning(2) in binary.warnings
    probs = np.column_stack([1 - p, p])
    multi = evaluate_classes(
        y,
        probs,
        ["neg", "pos"],
        clusters=patients,
        compare_probabilities=np.column_stack([1 - other, other]),
        n_boot=200,
        seed=0,
    )
    assert multi.clustered and clustered_mcnemar_warning(1) in multi.warnings
    single = evaluate_classes(y, probs, ["neg", "pos"], clusters=np.arange(120))
    assert not single.clustered


def test_class_names_are_unique_across_evaluation_and_reporting() -> None:
    """``MulticlassResult`` and ``ReportContext`` each name one class (no look-alikes)."""
    import ast

    import pair.reporting

    seen: dict[str, list[str]] = {}
    for pkg in (pair.evaluation, pair.reporting):  # evaluation includes runs/
        for path in Path(pkg.__path__[0]).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    seen.setdefault(node.name, []).append(str(path))
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}


def test_build_sr_names_one_function() -> None:
    """``outputs.sr.build_sr`` builds an SR from a module's evaluation; the SR of a stored
    report version is ``rendering.version_sr`` (they shared the name ``build_sr``)."""
    import ast

    import pair.reporting

    found = sorted(
        str(path.relative_to(Path(pkg.__path__[0])))
        for pkg in (pair.evaluation, pair.reporting)
        for path in Path(pkg.__path__[0]).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name == "build_sr"
    )
    assert found == ["outputs/sr.py"]
