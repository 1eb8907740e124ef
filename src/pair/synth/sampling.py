"""Random choices from the YAML word lists and weight tables (all through a numpy Generator)."""

from __future__ import annotations

import numpy as np


def pick(rng: np.random.Generator, items: list[str]) -> str:
    """One item, uniformly."""
    return str(items[int(rng.integers(len(items)))])


def weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """One key of ``weights``, with probability proportional to its value."""
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]
