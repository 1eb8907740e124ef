"""Raw model outputs → per-class probabilities (or a score), per the manifest's ``output``."""

from __future__ import annotations

import numpy as np

from pair.algorithms.manifest import OutputKind, OutputSpec, OutputValues


def expected_widths(spec: OutputSpec) -> set[int]:
    """Allowed sizes of the output's last axis (the tensor is ``[N]`` or ``[N, D]``)."""
    if spec.kind == OutputKind.BINARY:
        return {1, 2}
    if spec.kind == OutputKind.MULTICLASS:
        return {len(spec.classes)}
    return {1}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def to_class_values(raw: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """``[N]`` or ``[N, D]`` raw output → ``[N, K]`` in class order (K = len(classes)).

    A single binary value is the positive class; the other class gets ``1 - p``.
    """
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] not in expected_widths(spec):
        raise ValueError(
            f"output has {x.shape[1]} values per image; expected {sorted(expected_widths(spec))}"
        )
    if spec.kind == OutputKind.SCORE:
        return _sigmoid(x) if spec.values == OutputValues.LOGITS else x
    if x.shape[1] == 1:
        p = _sigmoid(x[:, 0]) if spec.values == OutputValues.LOGITS else x[:, 0]
        pos = spec.positive_index or 0
        out = np.empty((x.shape[0], 2))
        out[:, pos] = p
        out[:, 1 - pos] = 1.0 - p
        return out
    return _softmax(x) if spec.values == OutputValues.LOGITS else x


def case_score(values: np.ndarray, spec: OutputSpec) -> float | None:
    """The number thresholds apply to: positive-class probability, or the score itself."""
    idx = spec.positive_index
    return None if idx is None else float(values[idx])
