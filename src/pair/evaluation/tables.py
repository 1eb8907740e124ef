"""CSV input and terminal tables, shared by ``pair offline-evaluation`` and ``pair evaluate``."""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.table import Table

from pair.core.errors import Invalid
from pair.evaluation.report.checklist import fmt
from pair.evaluation.result import EvaluationResult, MulticlassResult

POSITIVE = {"1", "true", "yes", "positive", "pos"}
NEGATIVE = {"0", "false", "no", "negative", "neg"}


@dataclass
class ScoreTable:
    """Columns read from a CSV, with the rows that could not be used counted by reason."""

    y: np.ndarray
    scores: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    clusters: np.ndarray | None = None
    compare: np.ndarray | None = None
    exclusions: dict[str, int] = field(default_factory=dict)


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def load_scores_csv(
    path: Path,
    label: str,
    score: str,
    *,
    groups: list[str] | None = None,
    cluster: str | None = None,
    compare: str | None = None,
) -> ScoreTable:
    """Read one row per case; labels may be 0/1, true/false, yes/no or positive/negative."""
    if not path.is_file():
        raise Invalid(f"CSV file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        wanted = [
            label,
            score,
            *(groups or []),
            *([cluster] if cluster else []),
            *([compare] if compare else []),
        ]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise Invalid(f"{path.name} lacks column(s) {missing}; it has {columns}")
        ys: list[int] = []
        ss: list[float] = []
        cs: list[float] = []
        gs: dict[str, list[str]] = {g: [] for g in groups or []}
        cl: list[str] = []
        skipped: Counter[str] = Counter()
        for row in reader:
            lab = (row[label] or "").strip().lower()
            if lab in POSITIVE:
                yv = 1
            elif lab in NEGATIVE:
                yv = 0
            else:
                skipped["missing or unknown reference label"] += 1
                continue
            sv = _number(row[score] or "")
            if sv is None:
                skipped["missing or invalid score"] += 1
                continue
            cv = 0.0
            if compare:
                c = _number(row[compare] or "")
                if c is None:
                    skipped["missing comparator score"] += 1
                    continue
                cv = c
            ys.append(yv)
            ss.append(sv)
            cs.append(cv)
            for g in gs:
                gs[g].append((row[g] or "").strip())
            if cluster:
                cl.append((row[cluster] or "").strip())
    return ScoreTable(
        y=np.array(ys, dtype=np.int64),
        scores=np.array(ss, dtype=np.float64),
        groups={g: np.array(v, dtype=object) for g, v in gs.items()},
        clusters=np.array(cl, dtype=object) if cluster else None,
        compare=np.array(cs, dtype=np.float64) if compare else None,
        exclusions=dict(skipped),
    )


def main_table(r: EvaluationResult) -> Table:
    """The headline numbers as a rich table (one row per operating point)."""
    pct = f"{100 * r.level:g}% CI"
    t = Table(
        title=f"AUC {fmt(r.auc)} by {r.auc.method}; {r.cohort.n_cases} cases, "
        f"{r.cohort.n_positive} positive ({pct})"
    )
    for col in (
        "operating point",
        "threshold",
        "sensitivity",
        "specificity",
        "PPV",
        "NPV",
        "accuracy",
        "F1",
    ):
        t.add_column(col)
    for op in r.operating_points:
        t.add_row(
            op.name + (" *" if op.chosen_on_same_data else ""),
            f"{op.threshold:.4g}",
            fmt(op.sensitivity),
            fmt(op.specificity),
            fmt(op.ppv),
            fmt(op.npv),
            fmt(op.accuracy),
            fmt(op.f1),
        )
    return t


def multiclass_table(r: MulticlassResult) -> Table:
    """Per-class one-vs-rest metrics (the headline of a multiclass evaluation)."""
    e = r.evaluation
    t = Table(
        title=f"Accuracy {fmt(e.accuracy)}; Cohen's kappa {fmt(e.kappa)}; {r.cohort.n_cases} "
        f"cases, prediction = {r.decision_rule} ({100 * r.level:g}% CI)"
    )
    for col in ("class", "reference n", "predicted n", "sensitivity", "specificity", "PPV"):
        t.add_column(col)
    t.add_column("NPV")
    t.add_column("AUC (one-vs-rest)")
    for c in e.per_class:
        t.add_row(
            c.name,
            str(c.n_reference),
            str(r.cohort.predicted_counts.get(c.name, 0)),
            fmt(c.sensitivity),
            fmt(c.specificity),
            fmt(c.ppv),
            fmt(c.npv),
            fmt(c.auc),
        )
    return t


def confusion_table(r: MulticlassResult) -> Table:
    """Rows = reference class, columns = predicted class."""
    t = Table(title="Confusion matrix (rows: reference, columns: predicted)")
    t.add_column("reference / predicted")
    for name in r.classes:
        t.add_column(name, justify="right")
    for name, row in zip(r.classes, r.evaluation.confusion, strict=True):
        t.add_row(name, *(str(v) for v in row))
    return t


def multiclass_summary_lines(r: MulticlassResult) -> list[str]:
    """The lines printed under a multiclass result's tables."""
    lines: list[str] = []
    if r.macro_auc is not None:
        lines.append(f"Macro-average one-vs-rest AUC {r.macro_auc:.3f}")
    if r.kappa_linear is not None and r.kappa_quadratic is not None:
        lines.append(
            f"Ordinal classes: linear weighted kappa {fmt(r.kappa_linear)}, "
            f"quadratic weighted kappa {fmt(r.kappa_quadratic)}"
        )
    if r.calibration is not None:
        brier = r.calibration.brier
        lines.append(
            (f"Multiclass Brier {fmt(brier)}; " if brier else "")
            + "one-vs-rest calibration slope "
            + ", ".join(f"{c.name} {fmt(c.calibration.slope, 2)}" for c in r.calibration.per_class)
        )
    if r.comparison is not None:
        mc = r.comparison
        lines.append(
            f"{mc.name_a} - {mc.name_b}: accuracy difference {fmt(mc.accuracy_difference)}, "
            f"McNemar p = {mc.mcnemar.p_value:.3g}; "
            f"kappa difference {fmt(mc.kappa_difference)}"
        )
        lines.extend(
            f"  AUC difference {d.name}: {fmt(d.difference)}"
            + (f", p = {d.p_value:.3g}" if d.p_value is not None else "")
            for d in mc.per_class
        )
    lines.extend(f"warning: {w}" for w in r.warnings)
    return lines


def binary_summary_lines(r: EvaluationResult) -> list[str]:
    """The lines printed under a binary result's main table."""
    lines: list[str] = []
    if r.calibration is not None:
        c = r.calibration
        lines.append(
            f"Brier {fmt(c.brier)}; calibration slope {fmt(c.slope, 2)}, "
            f"intercept {fmt(c.intercept, 2)}; ECE {c.reliability_uniform.ece:.3f}"
        )
    if r.comparison is not None:
        d = r.comparison.auc
        lines.append(
            f"{r.comparison.name_a} - {r.comparison.name_b}: AUC difference "
            f"{fmt(d.difference)}, p = {d.p_value:.3g}"
        )
    lines.extend(f"warning: {w}" for w in r.warnings)
    return lines
