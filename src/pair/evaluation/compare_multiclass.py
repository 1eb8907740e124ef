"""Paired comparison of two multiclass algorithms (same classes, same cases), a - b.

* accuracy: McNemar's test on the discordant cases (only A correct vs only B correct) and a
  bootstrap percentile interval of the difference;
* kappa (linear weighted for ordinal classes, else unweighted): bootstrap percentile interval
  of the difference, two-sided p from the normal approximation (difference / bootstrap SD);
* per class, the one-vs-rest AUC of each algorithm's class probability: DeLong's paired test
  for independent cases; with several cases per patient, the patient-clustered bootstrap
  interval and p (as for binary comparisons).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps

from pair.evaluation.evaluate import boot_estimate
from pair.evaluation.result import (
    ClassAucDifference,
    Estimate,
    McNemarModel,
    MulticlassComparison,
)
from pair.evaluation.stats.bootstrap import BootstrapRun
from pair.evaluation.stats.compare import delong_test, mcnemar
from pair.evaluation.stats.multiclass import Weighting, confusion_matrix, weighted_kappa
from pair.evaluation.stats.multiclass_boot import paired_bootstrap


def _boot_p(run: BootstrapRun, key: str, value: float) -> float | None:
    reps = run.replicates[key]
    reps = reps[np.isfinite(reps)]
    if reps.size < 2 or not np.isfinite(value):
        return None
    sd = float(np.std(reps, ddof=1))
    return float(2 * sps.norm.sf(abs(value / sd))) if sd > 0 else 1.0


def compare_classes(
    y: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    classes: list[str],
    *,
    names: tuple[str, str],
    weighting: Weighting,
    clusters: Any | None,
    level: float,
    n_boot: int,
    seed: int,
) -> MulticlassComparison:
    """Everything in the module docstring; ``clusters`` only when patients repeat."""
    k = len(classes)
    pred_a = np.argmax(probs_a, axis=1)
    pred_b = np.argmax(probs_b, axis=1)
    ok_a, ok_b = pred_a == y, pred_b == y
    test = mcnemar(int(np.sum(ok_a & ~ok_b)), int(np.sum(~ok_a & ok_b)))
    run = paired_bootstrap(
        y,
        pred_a,
        pred_b,
        probs_a,
        probs_b,
        k,
        weighting,
        clusters=clusters,
        n_boot=n_boot,
        seed=seed,
    )
    acc_a, acc_b = float(ok_a.mean()), float(ok_b.mean())
    kap_a = weighted_kappa(confusion_matrix(y, pred_a, k), weighting, level).value
    kap_b = weighted_kappa(confusion_matrix(y, pred_b, k), weighting, level).value
    per_class = []
    for i, name in enumerate(classes):
        ref = (y == i).astype(np.int64)
        if not 0 < ref.sum() < y.size:
            per_class.append(
                ClassAucDifference(name=name, auc_a=None, auc_b=None, difference=None, p_value=None)
            )
            continue
        dt = delong_test(ref, probs_a[:, i], probs_b[:, i], level)
        if clusters is None:
            diff = Estimate(
                value=dt.difference, lower=dt.lower, upper=dt.upper, method="delong paired"
            )
            p: float | None = dt.p_value
        else:
            diff = boot_estimate(run, f"{i}:auc_diff", dt.difference, level, "percentile")
            p = _boot_p(run, f"{i}:auc_diff", dt.difference)
        per_class.append(
            ClassAucDifference(
                name=name, auc_a=dt.auc_a, auc_b=dt.auc_b, difference=diff, p_value=p
            )
        )
    return MulticlassComparison(
        name_a=names[0],
        name_b=names[1],
        accuracy_a=acc_a,
        accuracy_b=acc_b,
        accuracy_difference=boot_estimate(run, "accuracy_diff", acc_a - acc_b, level, "percentile"),
        mcnemar=McNemarModel(**test.__dict__),
        kappa_weighting=weighting,
        kappa_a=kap_a,
        kappa_b=kap_b,
        kappa_difference=boot_estimate(run, "kappa_diff", kap_a - kap_b, level, "percentile"),
        kappa_p_value=_boot_p(run, "kappa_diff", kap_a - kap_b),
        per_class=per_class,
    )
