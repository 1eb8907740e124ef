"""Per-case export of a finished run: pseudonym, study, case (series), score, truth,
prediction and outcome, as CSV or JSON, so a site can look at each false positive and false
negative (issue 15). Pseudonymous values only: the case table holds no original identifier.

Binary runs predict at the package's operating point (its declared threshold, else the default
0.5, as the result's ``manifest`` point); multiclass runs predict the most probable class.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from pair.core.errors import Conflict
from pair.evaluation.runs.models import EvaluationRun, RunStatus

FIELDS = (
    "pseudonym",
    "study_uid",
    "case",
    "score",
    "truth",
    "prediction",
    "outcome",
    "threshold",
    "viewer",
)
FORMATS = ("csv", "json")


def viewer_path(study_uid: str, series_uid: str) -> str:
    """The portal viewer of one case (a series)."""
    return f"/viewer/{study_uid}/{series_uid}"


def _binary_row(c: dict[str, Any], threshold: float) -> dict[str, Any]:
    score = c.get("score")
    predicted = None if score is None else int(score >= threshold)
    y = int(c["y"])
    outcome = (
        ""
        if predicted is None
        else {(1, 1): "TP", (0, 1): "FP", (0, 0): "TN", (1, 0): "FN"}[(y, predicted)]
    )
    return {
        "score": score,
        "truth": "positive" if y else "negative",
        "prediction": "" if predicted is None else ("positive" if predicted else "negative"),
        "outcome": outcome,
        "threshold": threshold,
    }


def _class_row(c: dict[str, Any], names: list[str]) -> dict[str, Any]:
    probs = c.get("probs") or []
    best = max(range(len(probs)), key=lambda k: probs[k]) if probs else None
    truth = names[int(c["y"])] if 0 <= int(c["y"]) < len(names) else str(c["y"])
    predicted = names[best] if best is not None and best < len(names) else ""
    return {
        "score": probs[best] if best is not None else None,
        "truth": truth,
        "prediction": predicted,
        "outcome": "" if not predicted else ("correct" if predicted == truth else "wrong"),
        "threshold": None,
    }


def case_rows(run: EvaluationRun) -> list[dict[str, Any]]:
    """One row per evaluated case of a finished run (409 before it is done)."""
    if run.status != RunStatus.DONE or run.result is None:
        raise Conflict(f"Evaluation run {run.id} is {run.status}; cases are exported when done.")
    result = run.result
    names = list((result.get("evaluation") or {}).get("classes") or [])
    threshold = next(
        (op["threshold"] for op in result.get("operating_points", []) if op["name"] == "manifest"),
        0.5,
    )
    rows = []
    for c in run.cases:
        part = _class_row(c, names) if names else _binary_row(c, float(threshold))
        rows.append(
            {
                "pseudonym": c["patient"],
                "study_uid": c["study_uid"],
                "case": c["case_id"],
                **part,
                "viewer": viewer_path(c["study_uid"], c["case_id"]),
            }
        )
    return rows


def errors(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The false positives and false negatives (binary) for the result page's links."""
    return {
        "false_positives": [r for r in rows if r["outcome"] == "FP"],
        "false_negatives": [r for r in rows if r["outcome"] == "FN"],
    }


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r[k] is None else r[k] for k in FIELDS})
    return buf.getvalue()
