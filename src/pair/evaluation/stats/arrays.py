"""Input checks shared by the statistics modules: one place that says what is allowed."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from pair.core.errors import Invalid

FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def as_labels(y_true: Any, name: str = "y_true") -> IntArray:
    """Binary reference labels as int64 0/1; anything else is refused with a clear message."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise Invalid(f"{name} must be one-dimensional, got shape {y.shape}")
    if y.dtype == np.bool_:
        return y.astype(np.int64)
    if y.size and not np.all(np.isin(y, (0, 1))):
        bad = sorted({str(v) for v in np.unique(y) if v not in (0, 1)})[:5]
        raise Invalid(f"{name} must contain only 0 (negative) and 1 (positive); found {bad}")
    return y.astype(np.int64)


def as_scores(scores: Any, n: int, name: str = "scores") -> FloatArray:
    """Finite float64 scores of the same length as the labels."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size != n:
        raise Invalid(f"{name} must be one-dimensional with {n} values, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise Invalid(f"{name} contains {int(np.sum(~np.isfinite(s)))} missing or infinite values")
    return s


def as_probabilities(p: Any, n: int, name: str = "probabilities") -> FloatArray:
    """Scores that must be probabilities in [0, 1] (calibration needs them)."""
    s = as_scores(p, n, name)
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise Invalid(f"{name} must lie in [0, 1]; got range [{s.min():.4g}, {s.max():.4g}]")
    return s


def require_both_classes(y: IntArray, what: str) -> None:
    """AUC and related statistics need at least one positive and one negative case."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise Invalid(
            f"{what} needs both positive and negative cases; got {n_pos} positives "
            f"and {y.size - n_pos} negatives"
        )


def check_level(level: float) -> float:
    if not 0.5 <= level < 1.0:
        raise Invalid(f"confidence level must be in [0.5, 1), got {level}")
    return float(level)
