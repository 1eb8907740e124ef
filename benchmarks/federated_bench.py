"""Local-only vs federated (FedAvg, FedProx, FedOpt) vs pooled training on synthetic sites.

Data: ``pair synth`` radiographs from three site archetypes (different COVID-19 prevalence,
portable-AP fraction, detector noise, tone curve and blur; ``pair.federated.core.synthetic``),
labels = RT-PCR. Each site is split by patient (``patient_split``, 30 % validation).

Training uses PAIR's engine-agnostic core (``SiteRunner``: the code FLARE's client script runs)
with in-process aggregation weighted by local steps, as FLARE's FedAvg does; the FLARE run itself
(process start-up, messaging) is timed separately with ``--flare``. Every method gets the same
number of local epochs in total (rounds × local epochs). Reported per method: AUC on each site's
validation split and overall (all sites' validation cases together) as the mean over seeds with
the seed range and the DeLong 95 % CI of the first seed; bytes per round; wall time.

    PYTHONPATH=src python benchmarks/federated_bench.py --out /tmp/fl-bench

``--real tests/data``: smoke run on the 48 real radiographs the repository ships for its tests,
split by patient into three sites (each keeps both classes); it exercises the pipeline on real
images only: the two classes come from different hospitals and age groups (tests/data/README.md).

``--label opacity`` (or ``typical``): train and score on an image-borne label instead of RT-PCR,
read from each site's ``ground_truth.csv`` (the RSNA category ``pair synth`` drew: any opacity vs
none, or typical COVID-19 pattern vs the rest), as a study with ``labels.source: report`` (a
radiologist's category) would. RT-PCR is only weakly carried by the images (docs/federated.md,
"Is the synthetic task learnable?"); the category is what the image shows. The relabelled sites
are written to ``OUT/sites-LABEL`` so ``--flare`` trains on the same labels.

The training recipe (``--optimizer``, ``--lr``, ``--width``, ``--norm``, ``--input-norm``,
``--augment``, ``--intensity-augment``, ``--batchnorm-freeze-round``, ``--batch-size``,
``--rounds``) is the same for every method; run 5's and run 7's recipes were chosen beforehand
on another synthetic draw by ``benchmarks/federated_tune.py``. ``--server-momentum`` (and
``--server-lr``) adds FedOpt, the server step of FLARE's ``FedOptRecipe`` (run 9). ``--jobs 2``
runs the seeds in parallel processes (one thread each).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pair.evaluation.stats.compare import delong_test
from pair.evaluation.stats.roc import auc_ci_delong
from pair.federated.core.data import (
    SiteData,
    load_site,
    patient_split,
    pool,
    save_site,
    study_input_spec,
)
from pair.federated.core.models import parameter_bytes
from pair.federated.core.site import SiteRunner, build_model, train_config
from pair.federated.core.synthetic import (
    IMAGE_LABELS,
    image_labels,
    read_ground_truth,
    write_synthetic_sites,
)
from pair.federated.core.train import get_state, local_train, predict, seed_everything, set_state
from pair.federated.study import Study, parse_study

METHODS = ("local-only", "fedavg", "fedprox", "pooled")
# the training recipe, the same for every method; set from the command line
SETTINGS: dict[str, Any] = {
    # FedOpt (server SGD with momentum on the averaged update, Reddi et al. 2021; FedAvgM of
    # Hsu et al. 2019 when lr is 1): a fifth method, run only when a momentum is given
    "server_momentum": None,
    "server_lr": 1.0,
    "lr": 0.05,
    "width": 8,
    "optimizer": "sgd",
    "norm": "batch",
    "input_norm": "none",
    "augment": False,
    "intensity_augment": False,
    "batchnorm_freeze_round": None,
    "batch_size": 16,
}


def methods() -> tuple[str, ...]:
    """The compared methods: FedOpt joins when the recipe sets a server momentum."""
    if SETTINGS["server_momentum"] is None:
        return METHODS
    return (*METHODS[:-1], "fedopt", METHODS[-1])


def headline_strategy() -> str:
    """The federated method a single run stands for: FedOpt when a server momentum is set."""
    return "fedavg" if SETTINGS["server_momentum"] is None else "fedopt"


def federated_methods() -> tuple[str, ...]:
    return tuple(m for m in methods() if m.startswith("fed"))


def _strategy(name: str) -> dict[str, Any]:
    if name == "fedopt":
        momentum = SETTINGS["server_momentum"]
        return {"name": name, "server_lr": SETTINGS["server_lr"], "server_momentum": momentum}
    return {"name": "fedprox" if name == "fedprox" else "fedavg", "mu": 0.01}


def make_study(seed: int, rounds: int, size: int, strategy: str, sites: list[str]) -> Study:
    return parse_study(
        {
            "schema": "pair-federated-study/1",
            "id": f"bench-{strategy}",
            "use_case": "covid19-cxr",
            "model": {
                "architecture": "small_cnn",
                "width": SETTINGS["width"],
                "norm": SETTINGS["norm"],
                "input_norm": SETTINGS["input_norm"],
            },
            "input": {"size": size},
            "sites": [{"name": s} for s in sites],
            "strategy": _strategy(strategy),
            "training": {
                "rounds": rounds,
                "local_epochs": 1,
                "batch_size": SETTINGS["batch_size"],
                "optimizer": SETTINGS["optimizer"],
                "lr": SETTINGS["lr"],
                "augment": SETTINGS["augment"],
                "intensity_augment": SETTINGS["intensity_augment"],
                "batchnorm_freeze_round": SETTINGS["batchnorm_freeze_round"],
                "min_sites": len(sites),
                "validation_fraction": 0.3,
                "seed": seed,
                "threads": 1,
                "local_baseline": False,  # the benchmark trains local-only models itself
            },
        },
        "benchmark",
    )


def average(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    total = float(sum(weights))
    out = {}
    for k, v in states[0].items():
        acc = torch.zeros_like(v, dtype=torch.float64)
        for s, w in zip(states, weights, strict=True):
            acc += s[k].double() * (w / total)
        out[k] = acc.to(v.dtype)
    return out


class ServerOptimizer:
    """FedOpt's server step as FLARE's ``PTFedOptModelShareableGenerator`` applies it: the
    averaged update, negated, is the gradient of torch SGD (lr, momentum) on the global
    model's parameters; buffers (BatchNorm statistics) take the plain average."""

    def __init__(self, study: Study, state: dict[str, torch.Tensor]) -> None:
        self.model = build_model(study)
        set_state(self.model, state)
        s = study.strategy
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=s.server_lr, momentum=s.server_momentum
        )

    def step(self, averaged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        glob = get_state(self.model)
        self.opt.zero_grad()
        names = set()
        for name, p in self.model.named_parameters():
            p.grad = -(averaged[name] - glob[name]).to(p.dtype)
            names.add(name)
        self.opt.step()
        new = get_state(self.model)
        out = {k: new[k] if k in names else averaged[k] for k in averaged}
        set_state(self.model, out)
        return out


def federated(study: Study, data: dict[str, SiteData]) -> tuple[Any, dict[str, SiteRunner], int]:
    runners = {name: SiteRunner(study, name, d) for name, d in data.items()}
    seed_everything(study.training.seed, 1)
    state = get_state(build_model(study))
    server = ServerOptimizer(study, state) if study.strategy.name == "fedopt" else None
    for r in range(study.training.rounds):
        results = [runners[n].round(state, r) for n in runners]
        state = average([res[0] for res in results], [res[2] for res in results])
        if server is not None:
            state = server.step(state)
    model = build_model(study)
    set_state(model, state)
    return model, runners, parameter_bytes(state)


def centralised(study: Study, train: SiteData, site_index: int) -> Any:
    seed_everything(study.training.seed, 1)
    model = build_model(study)
    for r in range(study.training.rounds):
        local_train(model, train, train_config(study, r, site_index))
    return model


def score(models: dict[str, Any], vals: dict[str, SiteData]) -> dict[str, Any]:
    """AUC (+ DeLong CI) per site (model of that site on its validation data) and overall."""
    out: dict[str, Any] = {}
    ys, ps = [], []
    for site, val in vals.items():
        p = predict(models[site], val)
        if len(set(val.labels.tolist())) < 2:  # tiny real split: AUC undefined at this site
            out[site] = {"auc": float("nan"), "lower": float("nan"), "upper": float("nan")}
        else:
            ci = auc_ci_delong(val.labels, p)
            out[site] = {"auc": ci.auc, "lower": ci.lower, "upper": ci.upper}
        ys.append(val.labels)
        ps.append(p)
    ci = auc_ci_delong(np.concatenate(ys), np.concatenate(ps))
    out["overall"] = {"auc": ci.auc, "lower": ci.lower, "upper": ci.upper}
    out["_scores"] = {**dict(zip(vals, ps, strict=True)), "overall": np.concatenate(ps)}
    return out


def paired(res: dict[str, Any], vals: dict[str, SiteData]) -> dict[str, Any]:
    """DeLong tests on the same validation cases (difference = federated − other): overall
    against pooled, and per site against that site's local-only model."""
    labels = {**{n: v.labels for n, v in vals.items()}, "overall": pool(list(vals.values())).labels}
    out: dict[str, Any] = {}
    for m in federated_methods():
        out[m] = {}
        for col, other in [("overall", "pooled")] + [(n, "local-only") for n in vals]:
            if len(set(labels[col].tolist())) < 2:
                continue
            t = delong_test(labels[col], res[m]["_scores"][col], res[other]["_scores"][col])
            out[m][f"{col} vs {other}"] = {
                "difference": t.difference,
                "lower": t.lower,
                "upper": t.upper,
                "p": t.p_value,
            }
    return out


def run_seed(seed: int, data: dict[str, SiteData], rounds: int, size: int) -> dict[str, Any]:
    names = list(data)
    res: dict[str, Any] = {}
    base = make_study(seed, rounds, size, "fedavg", names)
    splits = {n: patient_split(d, 0.3, seed) for n, d in data.items()}
    vals = {n: s[1] for n, s in splits.items()}
    t = time.perf_counter()
    local = {n: centralised(base, splits[n][0], i) for i, n in enumerate(names)}
    res["local-only"] = {**score(local, vals), "seconds": time.perf_counter() - t}
    for strategy in federated_methods():
        t = time.perf_counter()
        study = make_study(seed, rounds, size, strategy, names)
        model, _, nbytes = federated(study, data)
        res[strategy] = {
            **score(dict.fromkeys(names, model), vals),
            "seconds": time.perf_counter() - t,
            "bytes_per_round": 2 * nbytes * len(names),
        }
    t = time.perf_counter()
    pooled = centralised(base, pool([s[0] for s in splits.values()]), 0)
    res["pooled"] = {
        **score(dict.fromkeys(names, pooled), vals),
        "seconds": time.perf_counter() - t,
    }
    res["paired"] = paired(res, vals)
    for m in methods():
        del res[m]["_scores"]
    return res


def flare_run(out: Path, sites: dict[str, Path], rounds: int, size: int) -> dict[str, Any]:
    """The same study through FLARE's simulator (FedOpt when the recipe sets a server
    momentum, else FedAvg): wall time and recorded traffic."""
    from pair.federated import service
    from pair.federated.flare.simulate import simulate

    study = make_study(0, rounds, size, headline_strategy(), list(sites))
    t = time.perf_counter()
    result = simulate(study, sites, out / "flare-ws", cross_site_eval=False)
    seconds = time.perf_counter() - t
    recs = service.read_records(result.metrics_path)
    rounds_rec = [r for r in recs if r["kind"] == "round"]
    return {
        "strategy": study.strategy.name,
        "seconds": seconds,
        "round_wall_s": [r["wall_s"] for r in rounds_rec],
        "bytes_per_model": rounds_rec[-1]["bytes_per_model"] if rounds_rec else 0,
    }


def table(results: list[dict[str, Any]], names: list[str]) -> str:
    cols = [*names, "overall"]
    lines = [
        "| method | " + " | ".join(cols) + " | MB/round | wall s (mean) |",
        "|---" * (len(cols) + 3) + "|",
    ]
    for m in methods():
        cells = []
        for c in cols:
            aucs = [r[m][c]["auc"] for r in results if not np.isnan(r[m][c]["auc"])]
            first = results[0][m][c]
            if not aucs:
                cells.append("n/a (one class)")
                continue
            ci = (
                f" (CI {first['lower']:.3f}–{first['upper']:.3f})"
                if not np.isnan(first["auc"])
                else ""
            )
            cells.append(
                f"{np.mean(aucs):.3f} [{min(aucs):.3f}–{max(aucs):.3f}]{ci}"
                + (f" n={len(aucs)}" if len(aucs) < len(results) else "")
            )
        mb = results[0][m].get("bytes_per_round")
        secs = np.mean([r[m]["seconds"] for r in results])
        lines.append(
            f"| {m} | " + " | ".join(cells) + f" | {mb / 1e6:.3f} |"
            if mb
            else f"| {m} | " + " | ".join(cells) + " | — |"
        )
        lines[-1] += f" {secs:.1f} |"
    return "\n".join(lines)


def targets(results: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    mean = lambda m, c: float(np.nanmean([r[m][c]["auc"] for r in results]))  # noqa: E731
    out = {}
    for m in federated_methods():
        out[m] = {
            "ratio_to_pooled_overall": mean(m, "overall") / mean("pooled", "overall"),
            "meets_0.98_pooled": mean(m, "overall") >= 0.98 * mean("pooled", "overall"),
            "better_than_local_at_every_site": all(
                mean(m, s) > mean("local-only", s) for s in names
            ),
            "ratio_to_pooled_per_seed": [
                r[m]["overall"]["auc"] / r["pooled"]["overall"]["auc"] for r in results
            ],
            "seeds_better_than_local": {
                s: sum(r[m][s]["auc"] > r["local-only"][s]["auc"] for r in results) for s in names
            },
        }
    return out


def paired_table(results: list[dict[str, Any]]) -> str:
    """Per seed: federated − other AUC with its DeLong 95 % CI (p) on the same cases."""
    lines = ["| seed | method | comparison | difference [95 % CI] | p |", "|---|---|---|---|---|"]
    for seed, r in enumerate(results):
        for m, comps in r["paired"].items():
            for name, c in comps.items():
                lines.append(
                    f"| {seed} | {m} | {name} | {c['difference']:+.3f} "
                    f"[{c['lower']:+.3f}, {c['upper']:+.3f}] | {c['p']:.3f} |"
                )
    return "\n".join(lines)


def write_real_sites(src: Path, out: Path, size: int) -> dict[str, Path]:
    """The vendored radiographs as three sites: patients of each class dealt round-robin (in
    sorted pseudonym order) so every site has both classes; images prepared as site data."""
    from PIL import Image

    from pair.algorithms.preprocess import resize, scale_to_unit

    spec = study_input_spec(size)
    rows = list(csv.DictReader((src / "labels.csv").open(encoding="utf-8")))
    by_class: dict[int, list[str]] = {0: [], 1: []}
    for r in rows:
        label = int(r["label"] == "covid")
        if r["patient_key"] not in by_class[label]:
            by_class[label].append(r["patient_key"])
    site_of = {key: i % 3 for keys in by_class.values() for i, key in enumerate(sorted(keys))}
    folders = {}
    for k in range(3):
        images, labels, patients = [], [], []
        for r in rows:
            if site_of[r["patient_key"]] != k:
                continue
            pixels = np.asarray(Image.open(src / r["file"]).convert("L"), np.float32)
            unit = scale_to_unit(pixels, spec)
            images.append(np.clip(resize(unit, size, size, spec.resampling), 0, 1)[None])
            labels.append(int(r["label"] == "covid"))
            patients.append(f"R{sorted(site_of).index(r['patient_key']):03d}")
        data = SiteData(
            np.stack(images).astype(np.float32), np.asarray(labels, np.int64), np.asarray(patients)
        )
        name = f"site-{k + 1}"
        save_site(out / name, data, {"site": name, "source": f"real radiographs ({src})"})
        folders[name] = out / name
    return folders


def relabel_sites(
    folders: dict[str, Path], label: str, out: Path
) -> tuple[dict[str, Path], dict[str, SiteData]]:
    """Site folders with RT-PCR labels replaced by the image-borne ``label``, written under
    ``out`` (so FLARE's clients read the same labels); returns the new folders and data."""
    new_folders, data = {}, {}
    for name, folder in folders.items():
        relabelled = image_labels(load_site(folder), read_ground_truth(folder), label)
        save_site(out / name, relabelled, {"site": name, "label": label, "from": str(folder)})
        new_folders[name], data[name] = out / name, relabelled
    return new_folders, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/pair-fl-bench"))
    parser.add_argument("--cases", type=int, nargs=3, default=[150, 90, 60])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--norm", choices=["batch", "group"], default="batch")
    parser.add_argument("--input-norm", choices=["none", "image"], default="none")
    parser.add_argument("--augment", action="store_true", help="flip/shift training images")
    parser.add_argument(
        "--intensity-augment", action="store_true", help="random gamma/blur of training images"
    )
    parser.add_argument(
        "--batchnorm-freeze-round",
        type=int,
        default=None,
        help="from this round (epoch) on, train with frozen BatchNorm statistics (FixBN)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--server-momentum",
        type=float,
        default=None,
        help="also run FedOpt (server SGD with this momentum on the averaged update)",
    )
    parser.add_argument("--server-lr", type=float, default=1.0, help="FedOpt's server lr")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (processes)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic draw")
    parser.add_argument("--flare", action="store_true", help="also time FLARE's simulator")
    parser.add_argument("--real", type=Path, help="folder with labels.csv + images/ (tests/data)")
    parser.add_argument(
        "--label",
        choices=["rtpcr", *IMAGE_LABELS],
        default="rtpcr",
        help="synthetic labels: RT-PCR (default) or an image-borne RSNA-category label",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    SETTINGS.update(
        lr=args.lr,
        width=args.width,
        optimizer=args.optimizer,
        norm=args.norm,
        input_norm=args.input_norm,
        augment=args.augment,
        intensity_augment=args.intensity_augment,
        batchnorm_freeze_round=args.batchnorm_freeze_round,
        batch_size=args.batch_size,
        server_momentum=args.server_momentum,
        server_lr=args.server_lr,
    )
    data_dir = args.out / "sites"
    t = time.perf_counter()
    if args.real is not None:
        write_real_sites(args.real, data_dir, args.size)
    elif not (data_dir / "site-3" / "ground_truth.csv").exists():
        write_synthetic_sites(
            data_dir, 3, list(args.cases), args.size, seed=args.data_seed, jobs=args.jobs
        )
    gen_s = time.perf_counter() - t
    folders = {f"site-{i}": data_dir / f"site-{i}" for i in (1, 2, 3)}
    if args.label != "rtpcr":
        if args.real is not None:
            parser.error("--label applies to the synthetic sites only, not --real")
        folders, data = relabel_sites(folders, args.label, args.out / f"sites-{args.label}")
    else:
        data = {n: load_site(f) for n, f in folders.items()}
    names = list(data)
    seeds = list(range(args.seeds))
    with ProcessPoolExecutor(args.jobs) as ex:  # seeds in parallel, one thread each
        results = list(
            ex.map(
                run_seed,
                seeds,
                [data] * len(seeds),
                [args.rounds] * len(seeds),
                [args.size] * len(seeds),
            )
        )
    report: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "data": {n: {"cases": len(d), "positives": d.positives} for n, d in data.items()},
        "data_seconds": gen_s,
        "results": results,
        "targets": targets(results, names),
    }
    if args.flare:
        report["flare"] = flare_run(args.out, folders, args.rounds, args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "federated_bench.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report["data"]), f"data {gen_s:.0f} s")
    print(table(results, names))
    print(paired_table(results))
    print(json.dumps(report["targets"], indent=2))
    if "flare" in report:
        print(json.dumps(report["flare"]))


if __name__ == "__main__":
    main()
