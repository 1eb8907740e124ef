"""Weighted versions of the statistics, vectorised over a (B, n) matrix of case weights.

Used by the bootstrap (weights = draw counts) and the jackknife (weights = 0/1). With all
weights equal to 1 each function returns the ordinary statistic, which the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pair.evaluation.stats.arrays import BoolArray, FloatArray, IntArray


@dataclass(frozen=True)
class SortedScores:
    """Cases sorted once by score, with tie groups, so each replicate costs O(n)."""

    order: IntArray
    starts: IntArray  # first index of each tie group in sorted order
    pos_sorted: FloatArray  # 1.0 for positives in sorted order

    @classmethod
    def build(cls, y: IntArray, scores: FloatArray) -> SortedScores:
        order = np.argsort(scores, kind="mergesort")
        s = scores[order]
        starts = np.r_[0, np.nonzero(np.diff(s))[0] + 1].astype(np.int64)
        return cls(order, starts, y[order].astype(np.float64))

    def cumulative(self, w: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Cumulative weighted positives and negatives up to each tie group's end, ascending
        score: (B, G) each. Everything else (AUC, ROC points) follows from these two."""
        ws = w[:, self.order]
        cp = np.cumsum(ws * self.pos_sorted.astype(ws.dtype), axis=1)
        ct = np.cumsum(ws, axis=1)
        if self.starts.size < self.order.size:  # ties: keep the last index of each group
            ends = np.r_[self.starts[1:], self.order.size] - 1
            cp, ct = cp[:, ends], ct[:, ends]
        return cp, ct - cp


def weighted_auc(w: FloatArray, ss: SortedScores) -> FloatArray:
    """Mann-Whitney AUC with case weights; nan where a replicate lacks a class."""
    return auc_from_cumulative(*ss.cumulative(w))


def auc_from_cumulative(cp: FloatArray, cn: FloatArray) -> FloatArray:
    """sum_g pos_g * (negatives below g + half the negatives tied at g) / (P N)."""
    pos = np.diff(cp, axis=1, prepend=0.0)
    cn_prev = np.concatenate([np.zeros((cn.shape[0], 1), cn.dtype), cn[:, :-1]], axis=1)
    num = np.sum(pos * (cn + cn_prev), axis=1, dtype=np.float64) / 2.0
    den = cp[:, -1].astype(np.float64) * cn[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_tpr_at_fpr(w: FloatArray, ss: SortedScores, grid: FloatArray) -> FloatArray:
    """(B, len(grid)) sensitivities at fixed false-positive rates (for the ROC band)."""
    return tpr_from_cumulative(*ss.cumulative(w), grid)


def tpr_from_cumulative(cp: FloatArray, cn: FloatArray, grid: FloatArray) -> FloatArray:
    """Calling ``score >= s_g`` positive gives tp = P - cp[g-1], fp = N - cn[g-1]."""
    out = np.full((cp.shape[0], grid.size), np.nan)
    for b in range(cp.shape[0]):
        p_tot, n_tot = float(cp[b, -1]), float(cn[b, -1])
        if p_tot <= 0 or n_tot <= 0:
            continue
        # ROC points from the highest group down: (0, 0), then each group's inclusion.
        cn_prev = np.r_[0.0, cn[b, :-1]][::-1]
        cp_prev = np.r_[0.0, cp[b, :-1]][::-1]
        fpr = np.r_[0.0, (n_tot - cn_prev) / n_tot]
        tpr = np.r_[0.0, (p_tot - cp_prev) / p_tot]
        idx = np.searchsorted(fpr, grid, side="right") - 1
        out[b] = tpr[np.clip(idx, 0, tpr.size - 1)]
    return out


@dataclass(frozen=True)
class WeightedCounts:
    tp: FloatArray
    fp: FloatArray
    tn: FloatArray
    fn: FloatArray


def count_vectors(y: IntArray, pred: BoolArray) -> FloatArray:
    """(n, 4) indicator columns for tp, fp, tn, fn, to be multiplied by weights at once."""
    pos = y == 1
    return np.column_stack([pred & pos, pred & ~pos, ~pred & ~pos, ~pred & pos]).astype(np.float64)


def counts_from_product(prod: FloatArray) -> WeightedCounts:
    """Split W @ count_vectors(...) (B, 4) into the four counts."""
    return WeightedCounts(tp=prod[:, 0], fp=prod[:, 1], tn=prod[:, 2], fn=prod[:, 3])


def weighted_counts(w: FloatArray, y: IntArray, pred: BoolArray) -> WeightedCounts:
    return counts_from_product(w @ count_vectors(y, pred))


def ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def threshold_stats(c: WeightedCounts, prefix: str) -> dict[str, FloatArray]:
    """Sensitivity, specificity, PPV, NPV, accuracy, F1 for each replicate."""
    return {
        f"{prefix}sensitivity": ratio(c.tp, c.tp + c.fn),
        f"{prefix}specificity": ratio(c.tn, c.tn + c.fp),
        f"{prefix}ppv": ratio(c.tp, c.tp + c.fp),
        f"{prefix}npv": ratio(c.tn, c.tn + c.fn),
        f"{prefix}accuracy": ratio(c.tp + c.tn, c.tp + c.tn + c.fp + c.fn),
        f"{prefix}f1": ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
    }


def weighted_brier(w: FloatArray, y: IntArray, p: FloatArray) -> FloatArray:
    return ratio(w @ (p - y) ** 2, w.sum(axis=1))
