"""Results that look like numbers but say something is wrong: an AUC below 0.5 (the scores
rank the classes the wrong way round), a perfect separation (its intervals collapse to one
value), identical scores and a degenerate Youden point (no
threshold separates the classes; every case is called one way). Shown with the warnings on the
result page and in the report (issue 15)."""

from __future__ import annotations

import numpy as np

from pair.evaluation.stats.proportions import confusion_at


def result_flags(y: np.ndarray, s: np.ndarray, auc: float, youden: float) -> list[str]:
    """Sentences for the warnings list; empty when nothing is wrong."""
    flags: list[str] = []
    if auc < 0.5:
        flags.append(
            f"AUC {auc:.3f} is below 0.5: the scores rank negatives above positives more often "
            "than not. Check the output's positive class and the truth source before reading "
            "any other number."
        )
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if auc in (0.0, 1.0) and positives and negatives:
        flags.append(
            f"The scores separate the classes perfectly (AUC {auc:.3f} on {positives} positive "
            f"and {negatives} negative cases): every resample separates them too, so the "
            "bootstrap and DeLong intervals collapse to a single value. That is not certainty: "
            "with this few cases the true AUC may be much lower; evaluate more cases before "
            "relying on it."
        )
    distinct = np.unique(s)
    if distinct.size == 1:
        flags.append(
            f"Every case has the same score ({float(distinct[0]):.6g}): the algorithm does not "
            "separate the cases at all; its AUC is 0.5 by construction."
        )
    c = confusion_at(y, s, youden)
    sens = c.tp / max(c.tp + c.fn, 1)
    spec = c.tn / max(c.tn + c.fp, 1)
    if sens + spec - 1.0 <= 1e-12 or c.tp + c.fp in (0, y.size):
        flags.append(
            f"Degenerate Youden point (threshold {youden:.6g}: sensitivity {sens:.3f}, "
            f"specificity {spec:.3f}): no threshold does better than calling every case the "
            "same; it is not an operating point."
        )
    return flags
