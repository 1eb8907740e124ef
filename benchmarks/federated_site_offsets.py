"""Why a FedAvg model's overall AUC falls below its per-site AUCs: per-site score offsets.

On a synthetic draw (default: the tuning draw, ``--data-seed 1``), trains FedAvg with the
benchmark's in-process aggregation and prints, every few rounds, each site's validation AUC,
the overall AUC (all sites' validation cases ranked together) and each site's median score.
At the end, the BatchNorm statistics are re-estimated on all sites' training cases (what exact
aggregated statistics would give) and the overall AUC is printed again: if the offsets were
only in the stored statistics, this would close the gap. Used to choose run 7's remedies
(docs/federated.md); run it on the tuning draw, not on the benchmark's.

    PYTHONPATH=src python benchmarks/federated_site_offsets.py --sites /tmp/fltune6/sites
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from federated_bench import SETTINGS, average, make_study, relabel_sites
from torch import nn

from pair.evaluation.stats.roc import auc_ci_delong
from pair.federated.core.data import SiteData, patient_split, pool
from pair.federated.core.site import SiteRunner, build_model
from pair.federated.core.synthetic import write_synthetic_sites
from pair.federated.core.train import get_state, predict, seed_everything, set_state


def offsets(model: nn.Module, vals: dict[str, SiteData]) -> tuple[list[float], float, list[float]]:
    """Per-site AUCs, overall AUC, per-site median scores."""
    scores = {n: predict(model, v) for n, v in vals.items()}
    per_site = [  # a tiny split can hold one class only: AUC undefined there
        auc_ci_delong(v.labels, scores[n]).auc if len(set(v.labels.tolist())) == 2 else np.nan
        for n, v in vals.items()
    ]
    y = np.concatenate([v.labels for v in vals.values()])
    overall = auc_ci_delong(y, np.concatenate(list(scores.values()))).auc
    return per_site, overall, [float(np.median(s)) for s in scores.values()]


def reestimated(model: nn.Module, train: SiteData) -> nn.Module:
    """A copy whose BatchNorm statistics are the cumulative average over ``train``."""
    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    out.train()
    with torch.no_grad():
        x = torch.from_numpy(train.images)
        for i in range(0, len(x), 64):
            out(x[i : i + 64])
    return out.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=Path, default=Path("/tmp/pair-fl-tune/sites"))
    parser.add_argument("--cases", type=int, nargs=3, default=[600, 360, 240])
    parser.add_argument("--data-seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--batchnorm-freeze-round", type=int, default=None)
    parser.add_argument("--intensity-augment", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not (args.sites / "site-3" / "ground_truth.csv").exists():
        write_synthetic_sites(args.sites, 3, list(args.cases), args.size, args.data_seed, jobs=2)
    SETTINGS.update(  # run 5's recipe, plus the remedies under test
        optimizer="adam",
        lr=1e-3,
        width=16,
        input_norm="image",
        batchnorm_freeze_round=args.batchnorm_freeze_round,
        intensity_augment=args.intensity_augment,
    )
    folders = {f"site-{i}": args.sites / f"site-{i}" for i in (1, 2, 3)}
    _, data = relabel_sites(folders, "opacity", args.sites.parent / "sites-opacity")
    names = list(data)
    splits = {n: patient_split(d, 0.3, args.split_seed) for n, d in data.items()}
    vals = {n: s[1] for n, s in splits.items()}
    study = make_study(args.split_seed, args.rounds, args.size, "fedavg", names)
    runners = {n: SiteRunner(study, n, d) for n, d in data.items()}
    seed_everything(args.split_seed, 1)
    state = get_state(build_model(study))
    model = build_model(study)
    print("| round | AUC per site | overall AUC | median score per site |")
    print("|---|---|---|---|")
    for r in range(args.rounds):
        results = [runners[n].round(state, r) for n in names]
        state = average([res[0] for res in results], [res[2] for res in results])
        if r % 3 == 2 or r == args.rounds - 1:
            set_state(model, state)
            per_site, overall, medians = offsets(model, vals)
            print(
                f"| {r + 1} | {' / '.join(f'{a:.3f}' for a in per_site)} | {overall:.3f} | "
                + " / ".join(f"{m:.2f}" for m in medians)
                + " |",
                flush=True,
            )
    _, overall, medians = offsets(reestimated(model, pool([s[0] for s in splits.values()])), vals)
    print(
        f"BatchNorm statistics re-estimated on all training cases: overall AUC {overall:.3f}, "
        f"median scores {' / '.join(f'{m:.2f}' for m in medians)}"
    )


if __name__ == "__main__":
    main()
