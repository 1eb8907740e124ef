"""One site's part of a federated round, engine-agnostic: evaluate the global model, train
locally, evaluate the local model, protect the update. Engines (FLARE's client script, the
in-process benchmark) call ``SiteRunner.round``; only parameters and the returned aggregate
metrics ever leave the site.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pair.federated.core.data import SiteData, load_site, patient_split
from pair.federated.core.models import StudyNet, model_args, parameter_bytes
from pair.federated.core.privacy import clip_and_noise, zcdp_epsilon
from pair.federated.core.train import (
    State,
    TrainConfig,
    evaluate,
    get_state,
    local_train,
    seed_everything,
    set_state,
)
from pair.federated.study import Study


def build_model(study: Study) -> StudyNet:
    return StudyNet(
        **model_args(
            study.model.architecture,
            study.input.slices,
            study.model.width,
            study.model.norm,
            study.model.input_norm,
        )
    )  # type: ignore[arg-type]


def train_config(study: Study, round_no: int, site_index: int) -> TrainConfig:
    t = study.training
    mu = study.strategy.mu if study.strategy.name == "fedprox" else 0.0
    seed = t.seed * 1_000_003 + round_no * 101 + site_index
    freeze = t.batchnorm_freeze_round is not None and round_no >= t.batchnorm_freeze_round
    return TrainConfig(
        t.local_epochs,
        t.batch_size,
        t.optimizer,
        t.lr,
        seed,
        mu,
        t.augment,
        t.intensity_augment,
        freeze,
    )


def _norm(state: State) -> float:
    return float(sum(float((v.double() ** 2).sum()) for v in state.values())) ** 0.5


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


@dataclass
class SiteRunner:
    """A site's training state across rounds (its data split, local model, DP ledger)."""

    study: Study
    site: str
    data: SiteData
    train: SiteData = field(init=False)
    val: SiteData = field(init=False)
    releases: int = 0
    local_state: State | None = None
    c_local: State | None = None  # SCAFFOLD control variate of this site
    scaffold_delta: State | None = None  # its change in the last round (what is sent)
    baseline_state: State | None = None  # local-only model (training.local_baseline)

    def __post_init__(self) -> None:
        seed_everything(self.study.training.seed, self.study.training.threads)
        t = self.study.training
        self.train, self.val = patient_split(self.data, t.validation_fraction, t.seed)
        self.model = build_model(self.study)

    @classmethod
    def from_folder(cls, study: Study, site: str, folder: Path) -> SiteRunner:
        return cls(study, site, load_site(folder))

    @property
    def index(self) -> int:
        names = self.study.site_names
        return names.index(self.site) if self.site in names else 0

    def validate(self, state: dict[str, Any]) -> dict[str, float]:
        """Metrics of ``state`` on this site's validation split (cross-site evaluation)."""
        set_state(self.model, state)
        return evaluate(self.model, self.val)

    def round(
        self,
        global_state: dict[str, Any],
        round_no: int,
        fedprox_mu: float | None = None,
        c_global: dict[str, Any] | None = None,
    ) -> tuple[State, dict[str, float], int]:
        """Returns (parameters to send, metrics, local steps used as aggregation weight).

        c_global: SCAFFOLD server control; the site's control delta is then in ``scaffold_delta``.
        """
        set_state(self.model, global_state)
        reference = get_state(self.model)
        metrics = _prefixed("global_val_", evaluate(self.model, self.val))
        cfg = train_config(self.study, round_no, self.index)
        if fedprox_mu is not None:
            cfg = replace(cfg, fedprox_mu=fedprox_mu)
        controls = self._controls(c_global) if c_global is not None else None
        if controls is not None:  # evidence that the server's control arrived (0 in round 0)
            metrics["scaffold_c_global_norm"] = _norm(controls[0])
        result = local_train(self.model, self.train, cfg, scaffold=controls)
        if controls is not None:
            self._update_controls(controls, reference, result.steps, cfg.lr)
        metrics.update(_prefixed("val_", evaluate(self.model, self.val)))
        state = get_state(self.model)
        if self.study.training.local_baseline:
            metrics.update(_prefixed("local_only_val_", self._baseline_round(reference, cfg)))
            set_state(self.model, state)
        self.local_state = state
        dp = self.study.privacy.dp
        if dp is not None:
            update = {k: state[k] - reference[k] for k in state}
            gen = torch.Generator().manual_seed(cfg.seed + 17)
            noised, norm = clip_and_noise(update, dp.clip_norm, dp.noise_multiplier, gen)
            state = {
                k: (reference[k] + noised[k]).to(state[k].dtype)
                if state[k].is_floating_point()
                else state[k]
                for k in state
            }
            self.releases += 1
            metrics.update(
                dp_update_norm=norm,
                dp_epsilon=zcdp_epsilon(dp.noise_multiplier, self.releases, dp.delta),
                dp_delta=dp.delta,
            )
        metrics.update(
            train_loss=result.loss,
            train_samples=float(result.samples),
            train_cases=float(len(self.train)),
            val_cases=float(len(self.val)),
            train_seconds=result.seconds,
            bytes_sent=float(parameter_bytes(state)),
        )
        return state, metrics, result.steps

    def _baseline_round(self, start: State, cfg: TrainConfig) -> dict[str, float]:
        """One more round of the site's local-only model: it starts from the first global model
        (the same initialisation) and then only ever sees this site's data, with the same epochs
        and seeds as the federated training. Only its validation metrics leave the site."""
        set_state(self.model, self.baseline_state if self.baseline_state is not None else start)
        local_train(self.model, self.train, replace(cfg, fedprox_mu=0.0))
        self.baseline_state = get_state(self.model)
        return evaluate(self.model, self.val)

    def _controls(self, c_global: dict[str, Any]) -> tuple[State, State]:
        names = [n for n, _ in self.model.named_parameters()]
        params = dict(self.model.named_parameters())
        glob = {
            n: torch.as_tensor(c_global[n]).to(params[n].dtype)
            if n in c_global
            else torch.zeros_like(params[n].detach())
            for n in names
        }
        if self.c_local is None:
            self.c_local = {n: torch.zeros_like(params[n].detach()) for n in names}
        return glob, self.c_local

    def _update_controls(
        self, controls: tuple[State, State], reference: State, steps: int, lr: float
    ) -> None:
        """SCAFFOLD option II: c_i+ = c_i − c + (x − y_i) / (K·lr); keeps Δc_i to send."""
        c_global, c_local = controls
        params = dict(self.model.named_parameters())
        new = {
            n: c_local[n] - c_global[n] + (reference[n] - params[n].detach()) / (max(steps, 1) * lr)
            for n in c_local
        }
        self.scaffold_delta = {n: new[n] - c_local[n] for n in new}
        self.c_local = new
