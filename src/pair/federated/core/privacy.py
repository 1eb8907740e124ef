"""Differential privacy of the site update: L2 clipping + Gaussian noise, and its budget.

Mechanism (DP-FedAvg at the site, McMahan et al., ICLR 2018): the update Δ = w_local − w_global is
clipped to L2 norm C and N(0, (σC)²) noise is added per coordinate before it leaves the site.
Each round is then one Gaussian mechanism with L2 sensitivity C and noise multiplier σ on that
site's data (record-level bound only if one record cannot move Δ by more than C; PAIR reports it
as the per-site, per-release budget).

Accountant: zero-concentrated DP (Bun & Steinke, TCC 2016). One Gaussian mechanism with noise
multiplier σ is ρ-zCDP with ρ = 1/(2σ²) (Prop. 1.6); T compositions give Tρ (Lemma 1.7); and
ρ-zCDP implies (ε, δ)-DP with ε = ρ + 2·sqrt(ρ·ln(1/δ)) (Prop. 1.3). No subsampling
amplification is claimed (every site's whole update is released every round).
"""

from __future__ import annotations

import math

import torch

from pair.federated.core.train import State


def clip_and_noise(
    update: State, clip_norm: float, noise_multiplier: float, generator: torch.Generator
) -> tuple[State, float]:
    """Clipped, noised update and the norm before clipping (floating tensors only)."""
    keys = [k for k, v in update.items() if v.is_floating_point()]
    norm = math.sqrt(sum(float((update[k].double() ** 2).sum()) for k in keys))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    out = dict(update)
    for k in keys:
        noise = torch.normal(
            0.0, noise_multiplier * clip_norm, size=update[k].shape, generator=generator
        )
        out[k] = update[k] * scale + noise.to(update[k].dtype)
    return out, norm


def zcdp_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """ε after ``releases`` Gaussian releases with multiplier σ, via zCDP (see module doc)."""
    if noise_multiplier <= 0 or releases < 0 or not 0 < delta < 1:
        raise ValueError("need noise_multiplier > 0, releases >= 0, 0 < delta < 1")
    if releases == 0:
        return 0.0
    rho = releases / (2 * noise_multiplier**2)
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))
