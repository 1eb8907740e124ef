"""Training step and evaluation: plain functions of (model, site data, config), no engine.

``local_train`` runs the local epochs (SGD or Adam; optional flip/shift and tone/blur
augmentation; optionally with BatchNorm statistics frozen, FixBN), optionally with the FedProx
proximal term (mu/2 · ||w − w_global||², Li et al. 2020) or SCAFFOLD control-variate correction
(Karimireddy et al. 2020, option II). ``evaluate`` gives loss, AUC with DeLong 95 % CI and
sensitivity / specificity (Wilson CIs) at the operating point, reusing ``pair.evaluation.stats``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from pair.evaluation.stats.proportions import confusion_at, proportion
from pair.evaluation.stats.roc import auc_ci_delong, youden_threshold
from pair.federated.core.data import SiteData

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    seed: int = 0
    fedprox_mu: float = 0.0
    augment: bool = False  # random left-right flip and shift of each training image
    intensity_augment: bool = False  # random tone curve (gamma) and blur of each training image
    freeze_batchnorm: bool = False  # normalise with the model's stored BatchNorm statistics


@dataclass
class TrainResult:
    loss: float
    samples: int
    steps: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int, threads: int = 1) -> None:
    """Deterministic CPU training: fixed seeds, deterministic kernels, bounded threads."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)


def _pos_weight(labels: np.ndarray) -> torch.Tensor:
    """Balance classes in the loss (site prevalences differ widely)."""
    pos = max(int(labels.sum()), 1)
    neg = max(len(labels) - int(labels.sum()), 1)
    return torch.tensor(neg / pos, dtype=torch.float32)


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image flipped left-right with probability ½ and shifted by up to 1/16 of its size
    in each direction (edges replicated): cheap invariances a site's few hundred images do
    not teach on their own. Draws come from ``gen`` so training stays reproducible."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    m = max(1, h // 16)
    padded = nn.functional.pad(x, (m, m, m, m), mode="replicate")
    dy = torch.randint(0, 2 * m + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * m + 1, (n,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


# Tone-curve and sharpness randomisation (nnU-Net's gamma and Gaussian-blur augmentations,
# Isensee et al. 2021): sites differ most in their vendors' processing, so a model that has
# seen every site's images under many tone curves and blurs cannot key on one site's look.
GAMMA_RANGE = (0.6, 1.7)  # log-uniform exponent on images in [0, 1]
BLUR_PROBABILITY = 0.5
BLUR_SIGMA_PX = (0.3, 1.5)  # uniform, in pixels of the training image
_BLUR_RADIUS = 4


def intensity_augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image (values in [0, 1]) raised to a random gamma and, with probability ½, blurred
    by a Gaussian of random width (separable, edges replicated). Draws come from ``gen``."""
    n, c, h, w = x.shape
    lo, hi = np.log(GAMMA_RANGE[0]), np.log(GAMMA_RANGE[1])
    gamma = torch.exp(lo + (hi - lo) * torch.rand(n, generator=gen))
    x = x.clamp(0.0, 1.0) ** gamma[:, None, None, None]
    blur = torch.rand(n, generator=gen) < BLUR_PROBABILITY
    sigma = BLUR_SIGMA_PX[0] + (BLUR_SIGMA_PX[1] - BLUR_SIGMA_PX[0]) * torch.rand(n, generator=gen)
    if not bool(blur.any()):
        return x
    taps = torch.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=x.dtype)
    kernel = torch.exp(-(taps[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, taps)
    r = _BLUR_RADIUS
    planes = nn.functional.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="replicate")
    planes = nn.functional.conv2d(planes, kernel[:, None, None, :], groups=n * c)
    planes = nn.functional.conv2d(planes, kernel[:, None, :, None], groups=n * c)
    blurred = planes.reshape(n, c, h, w)
    return torch.where(blur[:, None, None, None], blurred, x)


def freeze_batchnorm_statistics(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode: training then normalises with the statistics
    the model carries (the global ones in a federated round) and leaves them unchanged.

    Why (FixBN, Zhong et al. 2024): a site's batches hold one site's images, so BatchNorm's
    batch statistics normalise each site's look away during local training, while the
    aggregated model normalises every site with averaged statistics at inference; its scores
    then carry a per-site offset. Training on with the global statistics frozen removes the
    mismatch."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def local_train(
    model: nn.Module,
    data: SiteData,
    cfg: TrainConfig,
    scaffold: tuple[State, State] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data``; returns mean loss and counts.

    scaffold: (global control c, local control c_i); gradients are corrected by c − c_i.
    """
    if len(data) == 0:
        raise ValueError("no training cases at this site")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all = torch.from_numpy(data.images)
    y_all = torch.from_numpy(data.labels.astype(np.float32))
    criterion = nn.BCEWithLogitsLoss(pos_weight=_pos_weight(data.labels))
    reference = [p.detach().clone() for p in model.parameters()] if cfg.fedprox_mu else None
    opt = _optimizer(model, cfg)
    names = [n for n, _ in model.named_parameters()]
    model.train()
    if cfg.freeze_batchnorm:
        freeze_batchnorm_statistics(model)
    total, count, steps = 0.0, 0, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            opt.zero_grad()
            x = x_all[idx]
            if cfg.intensity_augment:
                x = intensity_augment_batch(x, gen)
            if cfg.augment:
                x = augment_batch(x, gen)
            loss = criterion(model(x), y_all[idx])
            objective = loss
            if reference is not None:
                prox = sum(
                    ((p - r) ** 2).sum() for p, r in zip(model.parameters(), reference, strict=True)
                )
                objective = loss + cfg.fedprox_mu / 2 * prox
            objective.backward()
            if scaffold is not None:
                c_global, c_local = scaffold
                for name, p in zip(names, model.parameters(), strict=True):
                    if p.grad is not None:
                        p.grad += c_global[name] - c_local[name]
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            steps += 1
    return TrainResult(total / max(count, 1), count, steps, time.perf_counter() - start)


@torch.no_grad()
def predict(model: nn.Module, data: SiteData, batch_size: int = 128) -> np.ndarray:
    """Probabilities of the positive class."""
    model.eval()
    out = []
    x = torch.from_numpy(data.images)
    for i in range(0, len(x), batch_size):
        out.append(torch.sigmoid(model(x[i : i + batch_size])))
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def evaluate(model: nn.Module, data: SiteData, threshold: float | None = None) -> dict[str, float]:
    """Loss, AUC (DeLong CI), sensitivity/specificity at ``threshold`` (None: 0.5).

    AUC and the rates need both classes; with one class only loss and counts are returned.
    """
    p = predict(model, data)
    y = data.labels
    eps = 1e-7
    loss = float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))) if len(y) else 0.0
    out: dict[str, float] = {"loss": loss, "samples": float(len(y)), "positives": float(y.sum())}
    if 0 < y.sum() < len(y):
        ci = auc_ci_delong(y, p)
        out.update(auc=ci.auc, auc_lower=ci.lower, auc_upper=ci.upper)
        t = 0.5 if threshold is None else threshold
        c = confusion_at(y, p, t)
        sens = proportion(c.tp, c.tp + c.fn)
        spec = proportion(c.tn, c.tn + c.fp)
        out.update(
            threshold=t,
            sensitivity=sens.value,
            sensitivity_lower=sens.lower,
            sensitivity_upper=sens.upper,
            specificity=spec.value,
            specificity_lower=spec.lower,
            specificity_upper=spec.upper,
        )
    return out


def operating_point(model: nn.Module, data: SiteData) -> float:
    """Youden-optimal threshold on ``data`` (used to fix the exported model's threshold)."""
    return float(youden_threshold(data.labels, predict(model, data)))


def get_state(model: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def set_state(model: nn.Module, state: dict[str, Any]) -> None:
    """Load parameters given as tensors or numpy arrays (what engines send)."""
    current = model.state_dict()
    tensors = {
        k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).to(current[k].dtype)
        for k, v in state.items()
    }
    model.load_state_dict({**current, **tensors})
