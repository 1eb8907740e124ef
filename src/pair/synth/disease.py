"""COVID-19-like lung findings following the RSNA chest CT categories, and CT severity scores.

A :class:`Disease` is a list of lesions in millimetres (grid independent). Rendering it on a grid
yields, per voxel, an opacity ``density`` in [0, 1] and the ``target`` HU the lung moves towards
(ground glass about -550, consolidation about +30, cavity air -1000, effusion fluid +12). The
involved volume (density > 0.5 inside a lobe) gives the per-lobe severity score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pair.synth.anatomy import LOBES, Anatomy, Phantom
from pair.synth.geometry import F32, Box, Grid, SmoothField, ellipsoid_value
from pair.synth.sampling import weighted

CATEGORIES = ("typical", "indeterminate", "atypical", "negative")
GGO_HU = -560.0
CONSOLIDATION_HU = 30.0
FLUID_HU = 12.0


@dataclass(frozen=True)
class Lesion:
    """One finding. ``kind`` selects the texture; ``lobe`` restricts lobar kinds (1..5)."""

    kind: str
    centre: NDArray[np.float64]
    axes: NDArray[np.float64]
    field: SmoothField
    lobe: int = 0
    strength: float = 1.0


@dataclass
class Disease:
    category: str
    lesions: list[Lesion] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return sorted({les.kind for les in self.lesions})


@dataclass
class DiseaseMap:
    density: F32
    target: F32
    effusion: NDArray[np.bool_]


def severity_score(fraction: float) -> int:
    """CT severity score of one lobe from its involved fraction (0 none, 1 <5 %, 2 5-25 %,
    3 26-50 %, 4 51-75 %, 5 >75 %)."""
    if fraction <= 0.0:
        return 0
    if fraction < 0.05:
        return 1
    for score, upper in ((2, 0.25), (3, 0.50), (4, 0.75)):
        if fraction <= upper:
            return score
    return 5


# --- sampling ------------------------------------------------------------------------------
def _lung_point(
    a: Anatomy, rng: np.random.Generator, side: int, periphery: tuple[float, float], lower: bool
) -> NDArray[np.float64]:
    """A random point in one lung at normalised radius within ``periphery``."""
    for _ in range(200):
        z = rng.uniform(-150, 90) * a.sz if not lower else rng.uniform(-160, -10) * a.sz
        cx, cy, ax, ay = a.lung_section(side, np.float32(z))
        r = rng.uniform(*periphery)
        ang = rng.uniform(0, 2 * np.pi)
        x, y = cx + r * float(ax) * np.cos(ang), cy + r * float(ay) * np.sin(ang)
        if side * x < 25 or z < float(a.dome(side, np.float32(x), np.float32(y))) + 8:
            continue
        if lower and rng.random() < 0.6 and y < 0:  # posterior predominance
            continue
        return np.array([x, y, z])
    return np.array([side * 80 * a.sx, 20.0, 0.0])


def sample_disease(
    a: Anatomy,
    rng: np.random.Generator,
    category: str,
    extent: float,
    kinds: dict[str, dict[str, float]],
) -> Disease:
    """Lesions for one RSNA ``category``; ``extent`` in [0, 1] scales number and size."""
    d = Disease(category)
    if category == "typical":
        n = int(3 + round(extent * 14))
        for i in range(n):
            kind = weighted(rng, kinds["typical"])
            side = -1 if i % 2 == 0 else 1  # bilateral
            c = _lung_point(a, rng, side, (0.72, 0.95), lower=rng.random() < 0.7)
            size = rng.uniform(12, 22) + 75 * extent * rng.uniform(0.6, 1.3)
            if kind == "rounded_ggo":
                size = rng.uniform(10, 22)
            if kind == "reverse_halo":
                size = rng.uniform(14, 22)
            axes = size * rng.uniform(0.7, 1.3, size=3)
            d.lesions.append(Lesion(kind, c, axes, SmoothField.random(rng, (25, 60), 5)))
    elif category == "indeterminate":
        for side in (-1, 1) if rng.random() < 0.7 else (int(rng.choice([-1, 1])),):
            c = np.array([side * 62 * a.sx, 10.0, -20 * a.sz])
            axes = np.array([55, 80, 110]) * (0.6 + 0.9 * extent)
            d.lesions.append(Lesion("diffuse_ggo", c, axes, SmoothField.random(rng, (30, 70), 6)))
    elif category == "atypical":
        kind = weighted(rng, kinds["atypical"])
        side = int(rng.choice([-1, 1]))
        if kind == "lobar_consolidation":
            lobe = int(rng.choice([1, 2, 3]) if side < 0 else rng.choice([4, 5]))
            c = np.zeros(3)
            d.lesions.append(
                Lesion(kind, c, np.ones(3), SmoothField.random(rng, (20, 50), 5), lobe=lobe)
            )
        elif kind == "tree_in_bud":
            for _ in range(int(2 + 3 * extent)):
                c = _lung_point(a, rng, side, (0.3, 0.9), lower=False)
                d.lesions.append(
                    Lesion(
                        kind,
                        c,
                        np.full(3, rng.uniform(18, 30)),
                        SmoothField.random(rng, (8, 14), 6),
                    )
                )
        elif kind == "cavity":
            c = _lung_point(a, rng, side, (0.3, 0.7), lower=False)
            r = rng.uniform(14, 24)
            d.lesions.append(Lesion(kind, c, np.full(3, r), SmoothField.random(rng, (20, 40), 4)))
        else:  # effusion: dependent pleural fluid; axes[1] is its thickness (mm) at the base
            depth = rng.uniform(25, 60) * (0.6 + extent)
            c = np.array([side * 80.0, 95.0, a.dome(side, np.float32(side * 80), np.float32(95))])
            d.lesions.append(
                Lesion(kind, c, np.array([0, depth, 0]), SmoothField.random(rng, (40, 80), 3))
            )
    return d


# --- rendering -----------------------------------------------------------------------------
def _smooth_step(v: F32, edge: float) -> F32:
    """1 inside (v << 1), 0 outside, soft over ``edge`` around v == 1."""
    return np.clip((1.0 - v) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def render_disease(
    a: Anatomy, d: Disease, ph: Phantom, grid: Grid, scale: float = 1.0
) -> DiseaseMap:
    """Opacity density/target HU maps of ``d`` on the phantom's grid; ``scale`` < 1 regresses."""
    shape = grid.shape
    density = np.zeros(shape, dtype=np.float32)
    target = np.full(shape, GGO_HU, dtype=np.float32)
    effusion = np.zeros(shape, dtype=bool)
    lung = ph.lung
    for les in d.lesions:
        if les.kind == "effusion":
            z, y, x = grid.coords()
            side = 1 if les.centre[0] > 0 else -1
            depth = les.axes[1] * scale
            # Supine patient: fluid lies posteriorly under a coronal (horizontal) surface, its
            # thickness growing towards the costophrenic recess.
            top = (a.dome_right if side < 0 else a.dome_left) + 90.0 * a.sz
            thickness = depth * np.clip((top - z) / 90.0, 0.0, 1.6)
            _, cy, _, ay = a.lung_section(side, z)
            eff = lung & (side * x > 0) & (y > cy + ay - thickness)
            effusion |= eff
            continue
        if les.kind == "lobar_consolidation":
            whole: Box = (slice(None), slice(None), slice(None))
            in_lobe = ph.lobes == les.lobe
            f = les.field(grid)
            dens = np.clip(1.05 + 0.25 * f, 0, 1) * in_lobe
            _merge(density, target, whole, dens * scale, CONSOLIDATION_HU)
            continue
        pad = 1.6 if les.kind != "diffuse_ggo" else 1.3
        box = grid.box(les.centre - les.axes * pad, les.centre + les.axes * pad)
        if box is None:
            continue
        v = ellipsoid_value(grid, les.centre, les.axes, box)
        f = les.field(grid, box)
        if les.kind in ("ggo", "consolidation", "crazy_paving"):
            shape_v = v * (1 + 0.35 * f)
            dens = _smooth_step(shape_v, 0.4)
            if les.kind == "consolidation":
                core = _smooth_step(shape_v / 0.45, 0.5)
                _merge(density, target, box, dens * scale, GGO_HU)
                _merge(density, target, box, core * scale, CONSOLIDATION_HU)
                continue
            if les.kind == "crazy_paving":
                z, y, x = grid.coords(box)
                cells = np.minimum(
                    np.abs(((x + 0.6 * y) / 9.0) % 1.0 - 0.5),
                    np.abs(((y - 0.5 * z) / 11.0) % 1.0 - 0.5),
                )
                lines = _smooth_step(cells / 0.12, 0.8) * dens
                _merge(density, target, box, dens * scale, GGO_HU + 60)
                _merge(density, target, box, lines * scale, -250.0)
                continue
            _merge(density, target, box, dens * scale, GGO_HU)
        elif les.kind == "rounded_ggo":
            _merge(density, target, box, _smooth_step(v, 0.25) * scale, GGO_HU + 40)
        elif les.kind == "reverse_halo":
            ring = _smooth_step(np.abs(np.sqrt(v) - 0.8) / 0.22, 0.6)
            _merge(density, target, box, _smooth_step(v, 0.3) * scale, GGO_HU)
            _merge(density, target, box, ring * scale, CONSOLIDATION_HU - 20)
        elif les.kind == "diffuse_ggo":
            z, y, x = grid.coords(box)
            dens = np.clip(1.2 - v + 0.45 * f, 0, 1) * np.float32(0.95)
            _merge(density, target, box, dens.astype(np.float32) * scale, GGO_HU - 60)
        elif les.kind == "tree_in_bud":
            blobs = np.clip((f - 0.95) * 4, 0, 1) * _smooth_step(v, 0.3)
            _merge(density, target, box, blobs * scale, -80.0)
        elif les.kind == "cavity":
            wall = _smooth_step(v * (1 + 0.2 * f), 0.3)
            hole = _smooth_step(v / 0.35, 0.4)
            _merge(density, target, box, wall * scale, CONSOLIDATION_HU)
            tb = target[box]
            target[box] = np.where(hole > 0.5, -1000.0, tb)
    density *= lung
    return DiseaseMap(np.clip(density, 0, 1), target, effusion)


def _merge(density: F32, target: F32, box: Box, dens: F32, hu: float) -> None:
    """Combine a lesion into the maps: denser target wins where the lesion dominates."""
    d0, t0 = density[box], target[box]
    take = (dens > 0.02) & ((hu > t0) | (d0 < 0.05))
    target[box] = np.where(take, np.float32(hu), t0)
    density[box] = np.maximum(d0, dens)


def apply(hu: F32, ph: Phantom, dm: DiseaseMap) -> None:
    """Apply opacities in place: lung (and small vessels) move towards the lesion's target."""
    lung = ph.lung
    delta = dm.density * (dm.target - hu)
    hu += np.where(lung & ((delta > 0) | (dm.target < -900)), delta, 0).astype(np.float32)
    hu[dm.effusion] = FLUID_HU


def lobe_severity(ph: Phantom, dm: DiseaseMap) -> dict[str, tuple[float, int]]:
    """Per-lobe involved fraction and score (effusion is not parenchymal involvement)."""
    involved = (dm.density > 0.5) & ~dm.effusion
    lobes = ph.lobes[~dm.effusion]
    counts = np.bincount(lobes.ravel(), minlength=6)
    inv = np.bincount(ph.lobes[involved].ravel(), minlength=6)
    out = {}
    for i, name in enumerate(LOBES, start=1):
        frac = float(inv[i]) / float(counts[i]) if counts[i] else 0.0
        out[name] = (frac, severity_score(frac))
    return out
