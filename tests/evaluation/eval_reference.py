"""Independent, deliberately slow reference implementations used as test oracles.

Written from the published definitions (DeLong et al. 1988, Biometrics 44:837-845, eqs. for
V10, V01, S10, S01), not from the production code.
"""

from __future__ import annotations

import numpy as np

# Hanley & McNeil (1982, Radiology 143:29-36), Table I: CT ratings of 109 patients,
# 1 = definitely normal ... 5 = definitely abnormal. The same table is Stata's hanley.dta and
# is reproduced in many tutorials; its empirical AUC is 0.8931711 (R: pROC, rms, caTools).
HM_NORMAL = [33, 6, 6, 11, 2]
HM_ABNORMAL = [3, 2, 2, 11, 33]


def hanley_mcneil_data() -> tuple[np.ndarray, np.ndarray]:
    ratings = np.arange(1, 6)
    scores = np.r_[np.repeat(ratings, HM_NORMAL), np.repeat(ratings, HM_ABNORMAL)].astype(float)
    y = np.r_[np.zeros(sum(HM_NORMAL)), np.ones(sum(HM_ABNORMAL))].astype(int)
    return y, scores


def brute_delong(y: np.ndarray, score_rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and covariance S = S10/m + S01/n from the O(m n) placement values."""
    pos, neg = y == 1, y == 0
    v10s, v01s, aucs = [], [], []
    for s in score_rows:
        x, z = s[pos], s[neg]
        psi = (x[:, None] > z[None, :]).astype(float) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
    m, n = int(pos.sum()), int(neg.sum())
    a = np.array(aucs)
    v10, v01 = np.array(v10s), np.array(v01s)
    s10 = (v10 - a[:, None]) @ (v10 - a[:, None]).T / (m - 1)
    s01 = (v01 - a[:, None]) @ (v01 - a[:, None]).T / (n - 1)
    return a, s10 / m + s01 / n


def synthetic(n: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(1.4 * y - 0.7 + rng.normal(size=n))))
    if ties:
        p = np.round(p, 1)
    return y, p
