"""Typed shapes of what a run stores as JSON: its options and its case table.

They stay plain dicts in the database (``EvaluationRun.options`` and ``.cases``); the
TypedDicts name every key once so the service, the multiclass path and the CLI agree on them.
"""

# no ``from __future__ import annotations``: TypedDict must see NotRequired at class creation
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import numpy as np

DEFAULT_N_BOOT = 2000
DEFAULT_SEED = 0
GROUP_COLUMNS = ("sex", "age_band", "manufacturer", "site", "modality")
# the operating point of a binary package without output.recommended_threshold (docs/evaluation.md)
DEFAULT_THRESHOLD = 0.5


def threshold_source(declared: float | None) -> str:
    """How the report names the package's operating point: declared, or the default."""
    if declared is None:
        return f"default threshold {DEFAULT_THRESHOLD:g} (not declared)"
    return "declared threshold"


class RunOptions(TypedDict, total=False):
    """Statistics options of one run (all optional; defaults in ``with_defaults``)."""

    n_boot: int
    seed: int
    prevalence: float | None  # planning prevalence for PPV/NPV (binary)
    target_sensitivity: float | None  # extra operating point (binary)
    target_specificity: float | None  # extra operating point (binary), from a use case plan
    fixed_threshold: float | None  # extra operating point (binary), from a use case plan
    compare_threshold: float | None  # comparator's threshold (binary)
    compare_report: str | None  # compare with the readers' report category (MODULE[:VALUES])
    use_case: dict[str, Any]  # the declared use case's evaluation plan (``runs.plan``)


def with_defaults(options: RunOptions | None) -> RunOptions:
    """The options with ``n_boot`` and ``seed`` filled in (what ``create_run`` stores)."""
    opts: RunOptions = {"n_boot": DEFAULT_N_BOOT, "seed": DEFAULT_SEED}
    opts.update(options or {})
    return opts


class CaseRow(TypedDict):
    """One included case (one series) of a run's case table: pseudonymous values only."""

    case_id: str
    study_uid: str
    patient: str  # pseudonym: the cluster of the patient-clustered bootstrap
    y: int  # reference: 0/1 (binary) or class index (multiclass)
    score: float | None
    study_date: str
    n_images: int
    sex: str
    age_band: str
    manufacturer: str
    site: str
    modality: str
    probs: NotRequired[list[float]]  # multiclass: probability per manifest class
    probs_compare: NotRequired[list[float]]  # multiclass comparator (or readers' one-hot)
    score_compare: NotRequired[float | None]  # binary comparator (or readers' category)


def group_columns(rows: Sequence[CaseRow]) -> dict[str, np.ndarray]:
    """The subgroup columns of the case table, one object array per ``GROUP_COLUMNS`` name."""
    tables: list[Mapping[str, Any]] = list(rows)
    return {g: np.array([r[g] for r in tables], dtype=object) for g in GROUP_COLUMNS}
