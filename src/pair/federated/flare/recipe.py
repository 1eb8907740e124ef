"""Turn a PAIR study into an NVIDIA FLARE 2.9 recipe (the job the server runs).

Strategy → recipe: fedavg → ``FedAvgRecipe``; fedprox → ``FedProxRecipe`` (mu sent with every
task, applied by PAIR's client script); fedopt → ``FedOptRecipe`` (server SGD with momentum);
scaffold → ``ScaffoldRecipe`` (control variates in the task/result meta). Every recipe gets PAIR's
client script (``pair.federated.flare.client``), per-site arguments, the hub metric recorder,
optional FLARE privacy filters and cross-site evaluation.

This is the one entry point other code (``pair fl simulate``, ``pair fl run``) uses.
"""

from __future__ import annotations

import base64
import json
import shlex
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nvflare.recipe.secrets import PotentialSecretWarning
from nvflare.recipe.spec import Recipe

from pair.federated.core.models import model_args
from pair.federated.study import Study

CLIENT_SCRIPT = Path(__file__).with_name("client.py")
MODEL_CLASS = "pair.federated.core.models.StudyNet"
TRAIN_TASK = "train"
# strategies whose FLARE recipe builds per-site script runners from ``set_per_site_config``
PER_SITE_CONFIG_STRATEGIES = ("fedavg", "fedprox")
# seconds FedOpt's ScatterAndGather waits for the remaining sites once min_sites have answered
STRAGGLER_GRACE_S = 300


def _model_config(study: Study) -> dict[str, Any]:
    args = model_args(
        study.model.architecture,
        study.input.slices,
        study.model.width,
        study.model.norm,
        study.model.input_norm,
    )
    return {"class_path": MODEL_CLASS, "args": args}


def _common(study: Study, job_name: str, train_args: str) -> dict[str, Any]:
    return {
        "name": job_name,
        "model": _model_config(study),
        "min_clients": study.training.min_sites,
        "num_rounds": study.training.rounds,
        "train_script": str(CLIENT_SCRIPT),
        "train_args": train_args,
    }


def encode_site_data(site_data: Mapping[str, str | Path]) -> str:
    """URL-safe text form of a site → data folder map (one command-line argument)."""
    raw = json.dumps({k: str(v) for k, v in sorted(site_data.items())}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _strategy_recipe(
    study: Study,
    job_name: str,
    initial_ckpt: str | None,
    site_data: Mapping[str, str | Path] | None,
) -> Recipe:
    base = f"--study {study.encode()}"
    name = study.strategy.name
    if name in PER_SITE_CONFIG_STRATEGIES:
        kwargs = _common(study, job_name, base)
    else:
        # FLARE 2.9's FedOptRecipe and ScaffoldRecipe accept ``set_per_site_config`` but ignore
        # it (only FedAvg-based recipes build per-site script runners), so their sites would
        # start without ``--data``. They get one argument with every site's folder instead; each
        # site's script picks its own entry. Only used where the hub knows the paths anyway.
        args = base + (f" --site-data {encode_site_data(site_data)}" if site_data else "")
        kwargs = _common(study, job_name, args)
    if initial_ckpt:
        kwargs["initial_ckpt"] = initial_ckpt
    if name == "fedavg":
        from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe

        return FedAvgRecipe(**kwargs, key_metric="val_auc")
    if name == "fedprox":
        from nvflare.app_opt.pt.recipes.fedprox import FedProxRecipe

        return FedProxRecipe(**kwargs, key_metric="val_auc", fedprox_mu=study.strategy.mu)
    if name == "fedopt":
        from nvflare.app_opt.pt.recipes.fedopt import FedOptRecipe

        optimizer = {
            "class_path": "torch.optim.SGD",
            "args": {"lr": study.strategy.server_lr, "momentum": study.strategy.server_momentum},
        }
        return FedOptRecipe(**kwargs, device="cpu", optimizer_args=optimizer)
    # SCAFFOLD: FLARE's controller sends its control c in meta[SCAFFOLD_CTRL_GLOBAL] and
    # expects the site's control change in meta[SCAFFOLD_CTRL_DIFF] next to full parameters;
    # PAIR's core computes both (core.site.SiteRunner, option II of Karimireddy et al. 2020).
    # PyTorch exchange: with FLARE's default (NumPy) the controller persists NumPy arrays in
    # FL_global_model.pt, which neither its own model locator (cross-site evaluation) nor PAIR's
    # export can read with torch.load(weights_only=True).
    from nvflare.app_opt.pt.recipes.scaffold import ScaffoldRecipe
    from nvflare.client.config import ExchangeFormat

    return ScaffoldRecipe(**kwargs, server_expected_format=ExchangeFormat.PYTORCH)


def _site_args(study: Study, site_data: Mapping[str, str | Path] | None) -> dict[str, dict]:
    base = f"--study {study.encode()}"
    config: dict[str, dict] = {}
    for site in study.site_names:
        args = base
        if site_data and site in site_data:
            args += f" --data {shlex.quote(str(site_data[site]))}"
        config[site] = {"train_args": args}
    return config


def _use_all_sites(recipe: Recipe, study: Study) -> None:
    """Every connected site trains in every round; ``min_sites`` only gates the start.

    FLARE's recipes pass ``min_clients`` to their controller as the number of clients to
    sample: FedAvg/FedProx/SCAFFOLD (``BaseFedAvg.num_clients``) would train a random subset of
    ``min_sites`` sites per round, and FedOpt's ScatterAndGather would close a round as soon as
    ``min_sites`` results arrived (``wait_time_after_min_received=0``), dropping the slower
    sites. PAIR samples every study site (FLARE returns the connected ones) and lets
    ScatterAndGather wait ``STRAGGLER_GRACE_S`` for the rest once ``min_sites`` have answered.
    """
    from nvflare.app_common.workflows.base_fedavg import BaseFedAvg
    from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather

    for flow in recipe._job._deploy_map["server"].app_config.workflows:
        controller = flow.controller
        if isinstance(controller, BaseFedAvg):
            controller.num_clients = len(study.site_names)
        elif isinstance(controller, ScatterAndGather):
            controller._wait_time_after_min_received = STRAGGLER_GRACE_S


def build_recipe(
    study: Study,
    *,
    site_data: Mapping[str, str | Path] | None = None,
    metrics_path: str | Path | None = None,
    cross_site_eval: bool = True,
    job_name: str | None = None,
    initial_ckpt: str | None = None,
) -> Recipe:
    """The FLARE recipe for ``study``.

    site_data: per-site data location passed to that site's script as ``--data`` (FedAvg,
      FedProx) or ``--site-data`` (FedOpt, SCAFFOLD: see ``_strategy_recipe``) — simulation, or
      a deployment where the hub knows the site path; without it a site reads
      ``PAIR_FL_SITE_DATA`` from its own environment.
    metrics_path: a JSON-lines file at the server where per-site, per-round metrics are
      appended (``pair.federated.flare.recorder``); None records into the server's run folder.
    cross_site_eval: add FLARE's cross-site evaluation (global and local models on each site).
    initial_ckpt: absolute path of a global model to resume from.
    """
    from nvflare.recipe.utils import set_per_site_config

    from pair.federated.flare.recorder import MetricsRecorder

    with warnings.catch_warnings():
        # The encoded study is long and high-entropy, so FLARE's secret heuristic flags it;
        # it is the public study definition, never a credential.
        warnings.filterwarnings("ignore", category=PotentialSecretWarning)
        recipe = _strategy_recipe(study, job_name or study.id, initial_ckpt, site_data)
        if study.strategy.name in PER_SITE_CONFIG_STRATEGIES:
            set_per_site_config(recipe, _site_args(study, site_data))
    _use_all_sites(recipe, study)
    recorder = MetricsRecorder(
        study_id=study.id,
        study_version=study.version,
        metrics_path=str(metrics_path) if metrics_path else "",
    )
    # FLARE's own recipe utilities add server components through ``_job`` the same way.
    recipe._job.to_server(recorder, id="pair_metrics")
    _add_privacy_filters(recipe, study)
    if cross_site_eval:
        add_cross_site_eval(recipe)
    return recipe


def add_cross_site_eval(recipe: Recipe) -> None:
    """FLARE's cross-site evaluation: global and each site's local model on every site.

    ``nvflare.recipe.utils.add_cross_site_evaluation`` only accepts recipes that declare their
    framework (FedAvg, FedProx). FedOpt and SCAFFOLD recipes persist the global model with a
    PyTorch persistor registered as ``persistor`` too, so they get the same components that
    helper adds (model locator on that persistor, validation JSON writer, CrossSiteModelEval);
    PAIR's client script answers the ``validate`` and ``submit_model`` tasks for every strategy.
    """
    from nvflare.app_common.widgets.validation_json_generator import ValidationJsonGenerator
    from nvflare.app_common.workflows.cross_site_model_eval import CrossSiteModelEval
    from nvflare.app_opt.pt.file_model_locator import PTFileModelLocator
    from nvflare.recipe.utils import add_cross_site_evaluation

    if getattr(recipe, "framework", None) is not None:
        add_cross_site_evaluation(recipe)
        return
    persistor_id = recipe._job.comp_ids.get("persistor_id") or "persistor"
    locator_id = recipe._job.to_server(PTFileModelLocator(pt_persistor_id=persistor_id))
    recipe._job.to_server(ValidationJsonGenerator())
    recipe._job.to_server(CrossSiteModelEval(model_locator_id=locator_id))


def _add_privacy_filters(recipe: Recipe, study: Study) -> None:
    """FLARE result filters at each site (applied before anything leaves it)."""
    if study.privacy.exclude_vars:
        from nvflare.app_common.filters.exclude_vars import ExcludeVars

        recipe.add_client_output_filter(
            ExcludeVars(exclude_vars=study.privacy.exclude_vars), tasks=[TRAIN_TASK]
        )
    if study.privacy.percentile is not None:
        from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy

        recipe.add_client_output_filter(
            PercentilePrivacy(percentile=study.privacy.percentile), tasks=[TRAIN_TASK]
        )
