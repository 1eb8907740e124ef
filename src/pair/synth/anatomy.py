"""A parametric adult chest phantom: body wall, bones, mediastinum, five lobes, airways, vessels.

The phantom is a set of analytic shapes and tube trees in millimetres, drawn per patient with a
few random proportions, and rasterised on any :class:`~pair.synth.geometry.Grid` to Hounsfield
units plus a lobe label map. Values follow typical non-contrast CT: air -1000, lung about -850,
fat -100, soft tissue/blood 40, bone 300-900.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pair.synth.geometry import F32, Coord, Grid, SmoothField, ellipsoid_value, segment_sdf

LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
"""Lobe names; the label map stores ``index + 1`` (0 = not lung)."""

Tube = tuple[NDArray[np.float64], NDArray[np.float64], float, float]


@dataclass(frozen=True)
class Anatomy:
    """Per-patient proportions and the airway/vessel trees (all mm)."""

    sx: float  # lateral scale
    sy: float  # antero-posterior scale
    sz: float  # cranio-caudal scale
    fat_mm: float
    heart: float  # heart size factor (AP views magnify it)
    dome_right: float  # z of the right hemidiaphragm dome
    dome_left: float
    texture: SmoothField
    airways: list[Tube] = field(default_factory=list)
    vessels: list[Tube] = field(default_factory=list)

    # --- analytic shapes -------------------------------------------------------------------
    def body_axes(self, z: Coord) -> tuple[F32, F32]:
        """Body ellipse semi-axes at height z; narrows to the neck above the lung apices."""
        neck = np.clip((z - 140 * self.sz) / 45.0, 0.0, 1.0)
        upper = np.clip((z + 60 * self.sz) / (200 * self.sz), 0.0, 1.0)
        a = 160 * self.sx * (1 - 0.6 * neck) * (1 - 0.08 * upper) + self.fat_mm
        b = 108 * self.sy * (1 - 0.35 * neck) + self.fat_mm
        return np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)

    def lung_section(self, side: int, z: Coord) -> tuple[float, float, F32, F32]:
        """Centre and semi-axes of one lung's axial section (side -1 right, +1 left)."""
        apex = 125 * self.sz
        taper = np.sqrt(np.clip((apex - z) / (95 * self.sz), 0.0, 1.0))
        ax = 68 * self.sx * (0.3 + 0.7 * taper)
        ay = 92 * self.sy * (0.35 + 0.65 * taper)
        return (
            side * 79 * self.sx,
            6 * self.sy,
            np.asarray(ax, dtype=np.float32),
            np.asarray(ay, dtype=np.float32),
        )

    def dome(self, side: int, x: Coord, y: Coord) -> F32:
        """Height of the diaphragm under one lung: domed, deepest at the posterior recess."""
        cx, cy = side * 75 * self.sx, 0.0
        top = self.dome_right if side < 0 else self.dome_left
        return np.asarray(
            top - 40 * ((x - cx) / (70 * self.sx)) ** 2 - 55 * ((y - cy) / (90 * self.sy)) ** 2,
            dtype=np.float32,
        )

    def heart_value(self, z: Coord, y: Coord, x: Coord) -> F32:
        h = self.heart
        return np.asarray(
            ((x - 30 * self.sx) / (64 * self.sx * h)) ** 2
            + ((y + 28 * self.sy) / (52 * self.sy * h)) ** 2
            + ((z - (self.dome_left + 45)) / (62 * self.sz * h)) ** 2,
            dtype=np.float32,
        )

    def fissure(self, side: int, z: Coord, y: Coord, x: Coord) -> F32:
        """> 0 above the oblique fissure (upper/middle lobe), < 0 below it (lower lobe)."""
        z0 = (50 if side < 0 else 60) * self.sz
        wave = 5 * np.sin(x / 23.0) * np.cos(y / 31.0)
        return np.asarray(z - (z0 + 1.05 * (y - 90 * self.sy)) + wave, dtype=np.float32)


def random_anatomy(rng: np.random.Generator, sex: str, ap_view: bool = False) -> Anatomy:
    """Draw one patient's proportions and airway/vessel trees."""
    size = 1.0 if sex == "M" else 0.93
    sx = float(size * rng.uniform(0.92, 1.08))
    sy = float(size * rng.uniform(0.9, 1.08))
    sz = float(size * rng.uniform(0.94, 1.06))
    dome_r = float(rng.uniform(-100, -85) * sz)
    anat = Anatomy(
        sx=sx,
        sy=sy,
        sz=sz,
        fat_mm=float(rng.uniform(8, 30)),
        heart=float(rng.uniform(0.92, 1.1) * (1.12 if ap_view else 1.0)),
        dome_right=dome_r,
        dome_left=dome_r - float(rng.uniform(8, 18)),
        texture=SmoothField.random(rng, (6.0, 14.0), n=6),
    )
    anat.airways.extend(_central_airways(anat))
    anat.vessels.extend(_vessel_tree(anat, rng))
    return anat


def _p(x: float, y: float, z: float) -> NDArray[np.float64]:
    return np.array([x, y, z], dtype=np.float64)


def _central_airways(a: Anatomy) -> list[Tube]:
    """Trachea, main and lobar bronchi as tubes (outer radius = lumen + wall drawn later)."""
    carina = _p(0, 8 * a.sy, 15 * a.sz)
    rmb = _p(-42 * a.sx, 18 * a.sy, -8 * a.sz)
    lmb = _p(40 * a.sx, 22 * a.sy, -25 * a.sz)
    return [
        (_p(0, -8 * a.sy, 200 * a.sz), carina, 9.0, 8.5),
        (carina, rmb, 7.0, 6.0),
        (rmb, _p(-62 * a.sx, 18 * a.sy, 12 * a.sz), 4.5, 4.0),  # RUL bronchus
        (rmb, _p(-58 * a.sx, 28 * a.sy, -45 * a.sz), 5.0, 4.5),  # bronchus intermedius
        (carina, lmb, 6.5, 5.5),
        (lmb, _p(60 * a.sx, 6 * a.sy, -10 * a.sz), 4.5, 4.0),  # LUL bronchus
        (lmb, _p(62 * a.sx, 35 * a.sy, -60 * a.sz), 4.5, 4.0),  # LLL bronchus
    ]


def inside_lungs(a: Anatomy, x: float, y: float, z: float) -> bool:
    """Point test used while growing trees (same shapes as the rasteriser)."""
    zz = np.float32(z)
    for side in (-1, 1):
        cx, cy, ax, ay = a.lung_section(side, zz)
        if float(ax) <= 0:
            continue
        if ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 < 0.9 and z > float(
            a.dome(side, np.float32(x), np.float32(y))
        ):
            return True
    return False


def _vessel_tree(a: Anatomy, rng: np.random.Generator) -> list[Tube]:
    """Pulmonary vessels: random bifurcating tubes grown from each hilum, kept inside the lungs."""
    tubes: list[Tube] = []
    for side in (-1, 1):
        hilum = _p(side * 55 * a.sx, 12 * a.sy, -18 * a.sz)
        lung_c = _p(side * 80 * a.sx, 10 * a.sy, -20 * a.sz)
        stack = [
            (hilum, _p(side * 0.5, -0.2, 1.0), 6.5, 0),
            (hilum, _p(side * 1.0, -0.5, 0.0), 6.0, 0),
            (hilum, _p(side * 0.5, 0.4, -1.0), 6.5, 0),
            (hilum, _p(side * 0.6, 0.8, -0.4), 6.0, 0),
            (hilum, _p(side * 0.7, -0.8, -0.5), 5.5, 0),
            (hilum, _p(side * 0.3, 0.7, 0.8), 5.5, 0),
            (hilum, _p(side * 0.3, 0.9, -1.0), 5.5, 0),
            (hilum, _p(side * 0.6, -0.3, -1.0), 5.0, 0),
        ]
        while stack:
            start, direction, radius, gen = stack.pop()
            length = 8 + 4.0 * radius * rng.uniform(0.8, 1.3)
            direction = direction / np.linalg.norm(direction)
            end = start + direction * length
            if not inside_lungs(a, *end):
                end = start + direction * length * 0.5
                if not inside_lungs(a, *end):
                    continue
            r_end = radius * 0.9
            tubes.append((start, end, radius, r_end))
            if r_end < 0.8 or gen > 9:
                continue
            outward = end - lung_c
            outward /= np.linalg.norm(outward) + 1e-6
            for _ in range(2):
                child = direction + 0.55 * rng.normal(size=3) + 0.35 * outward
                stack.append((end, child, r_end * 0.82, gen + 1))
    return tubes


@dataclass
class Phantom:
    """A rasterised chest: HU, lobe labels (0 = not lung, 1..5 = LOBES) and lung mask."""

    hu: F32
    lobes: NDArray[np.uint8]

    @property
    def lung(self) -> NDArray[np.bool_]:
        return self.lobes > 0


def render(a: Anatomy, grid: Grid, texture: bool = True) -> Phantom:
    """Rasterise the anatomy on ``grid`` (HU float32 and lobe labels); ``texture`` adds the fine
    parenchymal pattern (worth it on CT, invisible in a projection)."""
    z, y, x = grid.coords()
    shape = grid.shape
    hu = np.full(shape, -1000.0, dtype=np.float32)

    # Body wall: fat outside, muscle inside; the thoracic cavity is mediastinal fat by default.
    ba, bb = a.body_axes(z)
    rho = np.sqrt((x / ba) ** 2 + (y / bb) ** 2)
    rho_mus = np.sqrt((x / (ba - a.fat_mm)) ** 2 + (y / (bb - a.fat_mm)) ** 2)
    cav_a, cav_b = ba - a.fat_mm - 14.0, bb - a.fat_mm - 14.0
    rho_cav = np.sqrt((x / cav_a) ** 2 + (y / cav_b) ** 2)
    # Soft (partial-volume) edges over one voxel along y: a projection along y of hard edges
    # would show the voxel staircase as stripes.
    dy = grid.spacing[1]
    _paint(hu, _soft(rho, bb, dy), -100.0)
    _paint(hu, _soft(rho_mus, bb - a.fat_mm, dy), 45.0)
    _paint(hu, _soft(rho_cav, cav_b, dy), -70.0)
    # Below the domes: liver on the right, abdomen on the left, gastric air under the left dome.
    abdomen = (rho_cav < 1.0) & (z < np.maximum(a.dome(-1, x, y), a.dome(1, x, y)) + 10)
    hu[abdomen] = 35.0
    hu[abdomen & (x < 20) & (z < a.dome_right + 5)] = 58.0
    stomach_c = _p(70 * a.sx, -20, a.dome_left - 45)
    _blob(grid, hu, stomach_c, _p(45, 40, 30), -1000.0, abdomen)

    # Shoulders: soft tissue with the humeral head, lateral to the upper thorax.
    for side in (-1, 1):
        _blob(grid, hu, _p(side * 172 * a.sx, 0, 150 * a.sz), _p(48, 60, 55), 40.0, hu < 0)
        _blob(grid, hu, _p(side * 180 * a.sx, 0, 150 * a.sz), _p(24, 24, 26), 400.0, None)

    # CT table under the patient.
    _, bb0 = a.body_axes(np.float32(0))
    table = (y > bb0 + 12) & (y < bb0 + 20) & (np.abs(x) < 220)
    hu[np.broadcast_to(table, shape)] = 150.0

    # Heart and great vessels.
    heart_v = a.heart_value(z, y, x)
    _paint(hu, _soft(np.sqrt(heart_v), 52 * a.sy * a.heart, dy), 40.0)
    aorta = ((x - 22 * a.sx) ** 2 + (y - 58 * a.sy) ** 2 < (13 * a.sx) ** 2) & (
        z > a.dome_left - 30
    )
    hu[aorta] = 42.0

    # Lungs with a gravity-dependent density gradient and fine parenchymal texture.
    lobes = np.zeros(shape, dtype=np.uint8)
    fissure_line = np.zeros(shape, dtype=bool)
    lung_alpha = np.zeros(shape, dtype=np.float32)
    mid = int(np.searchsorted(grid.x, 0.0))
    for side, half in ((-1, slice(0, mid)), (1, slice(mid, shape[2]))):
        box = (slice(None), slice(None), half)  # each lung lives on its own side of x = 0
        bz, by, bx = grid.coords(box)
        cx, cy, ax, ay = a.lung_section(side, bz)
        with np.errstate(divide="ignore", invalid="ignore"):
            r_lung = np.sqrt(((bx - cx) / ax) ** 2 + ((by - cy) / ay) ** 2)
            alpha = _soft(np.nan_to_num(r_lung, nan=9.0, posinf=9.0), ay, dy)
        other = (bz > a.dome(side, bx, by)) & (heart_v[box] > 1.15) & (side * bx > 16)
        other &= ((np.abs(bx) > 28) | (by < 40 * a.sy)) & ~aorta[box]
        alpha *= other * _soft(rho_cav[box] / 0.96, cav_b * 0.96, dy)
        lung = alpha > 0.5
        lung_alpha[box] = alpha
        fis = a.fissure(side, bz, by, bx)
        if side < 0:
            horiz = bz - (-28 * a.sz + 4 * np.sin(by / 19.0))
            label = np.where(fis < 0, 3, np.where(horiz > 0, 1, 2))
        else:
            label = np.where(fis < 0, 5, 4)
        lobes[box] = np.where(lung, label, 0)
        fissure_line[box] = lung & (np.abs(fis) < 0.9)
    lung = lobes > 0
    dens = -865.0 + 35.0 * (y - 10 * a.sy) / (86 * a.sy)
    if texture:
        dens = dens + 18.0 * a.texture(grid)
    _paint(hu, lung_alpha, dens)
    hu[fissure_line] = -650.0  # fissures show as faint thin lines

    _draw_bones(a, grid, hu, x, y, z, rho_cav, cav_b)
    _draw_tubes(grid, hu, a.vessels, 40.0, None, lung)
    _draw_tubes(grid, hu, a.airways, -1000.0, 1.8, None)
    return Phantom(hu=hu, lobes=lobes)


def _blob(
    grid: Grid,
    hu: F32,
    centre: NDArray[np.float64],
    axes: NDArray[np.float64],
    value: float,
    where: NDArray[np.bool_] | None,
) -> None:
    """Paint a soft-edged axis-aligned ellipsoid (only inside its bounding box)."""
    box = grid.box(centre - axes - 2, centre + axes + 2)
    if box is None:
        return
    rho = np.sqrt(ellipsoid_value(grid, centre, axes, box))
    alpha = _soft(rho, float(axes[1]), grid.spacing[1])
    if where is not None:
        alpha *= np.broadcast_to(where, hu.shape)[box]
    region = hu[box]
    _paint(region, alpha, value)
    hu[box] = region


def _soft(rho: F32, radius_mm: F32 | float, step_mm: float) -> F32:
    """Occupancy in [0, 1] of a shape with normalised radius ``rho`` (1 on the surface)."""
    out = np.subtract(np.float32(1.0), rho, dtype=np.float32)
    out *= np.asarray(radius_mm, dtype=np.float32) / np.float32(step_mm)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def _paint(hu: F32, alpha: F32, value: F32 | float) -> None:
    """Blend ``value`` into ``hu`` with opacity ``alpha`` (in place)."""
    delta = np.subtract(value, hu, dtype=np.float32)
    delta *= alpha
    hu += delta


def _draw_bones(
    a: Anatomy, grid: Grid, hu: F32, x: F32, y: F32, z: F32, rho_cav: F32, cav_b: F32
) -> None:
    """Ribs (sloping bands in the chest wall), sternum, spine and clavicles."""
    dy = grid.spacing[1]
    band_mm = np.minimum(rho_cav - 0.965, 1.0 + 6.0 / cav_b - rho_cav) * cav_b
    band_alpha = np.clip(band_mm / dy + 0.5, 0.0, 1.0)
    band = band_alpha > 0
    yn = np.clip(y / cav_b, -1, 1)
    # Ribs run from the spine (posterior, high) round the side and down to the anterior wall.
    phase = (z + 105.0 * a.sz * (1 - yn) / 2 - 20.0) / (27.0 * a.sz)
    frac = phase - np.floor(phase)
    rib_n = np.floor(phase)
    ribs = band & (frac < 0.36) & (rib_n > -7) & (rib_n < 6) & ((np.abs(x) > 30) | (yn > 0))
    cortex = np.abs(frac - 0.18) > 0.11
    rib_hu = np.where(cortex, np.float32(700.0), np.float32(250.0))
    _paint(hu, (band_alpha * ribs).astype(np.float32), rib_hu)
    sternum = (np.abs(x) < 16) & band & (yn < 0) & (z > a.dome_left - 10) & (z < 130 * a.sz)
    hu[sternum] = 350.0
    # Vertebral bodies with discs, spinal canal behind.
    vy = 68.0 * a.sy
    body = x**2 + (y - vy) ** 2 < (19.0 * a.sx) ** 2
    disc = np.abs(((z / (27.0 * a.sz)) % 1.0) - 0.5) > 0.42
    hu[body & ~disc] = 220.0
    hu[body & (x**2 + (y - vy) ** 2 > (16.5 * a.sx) ** 2) & ~disc] = 550.0
    hu[body & disc] = 90.0
    canal = x**2 + (y - vy - 27.0 * a.sy) ** 2 < 8.5**2
    hu[np.broadcast_to(canal, hu.shape)] = 25.0
    lamina = (np.abs(x) < 22) & (np.abs(y - vy - 38.0 * a.sy) < 4) & ~disc
    hu[lamina] = 600.0
    for side in (-1, 1):
        p0 = _p(side * 22 * a.sx, -95 * a.sy, 150 * a.sz)
        p1 = _p(side * 150 * a.sx, -25 * a.sy, 168 * a.sz)
        _draw_tubes(grid, hu, [(p0, p1, 7.0, 8.0)], 600.0, None, None)


def _draw_tubes(
    grid: Grid,
    hu: F32,
    tubes: list[Tube],
    value: float,
    wall: float | None,
    within: NDArray[np.bool_] | None,
) -> None:
    """Draw tubes with soft (partial-volume) edges; with ``wall`` a soft-tissue wall of that
    thickness surrounds a lumen of ``value`` (airways)."""
    dz, dy, dx = grid.spacing
    soft = 0.5 * min(dy, dx) + 0.4
    slab = dz if dz > 1.5 * max(dy, dx) else 0.0  # thick CT slices: average over the slab
    for p0, p1, r0, r1 in tubes:
        hit = segment_sdf(grid, p0, p1, r0 + (wall or 0), r1 + (wall or 0), slab)
        if hit is None:
            continue
        box, sdf = hit
        fill = 1.0
        if slab:
            # Partial volume: a thin tube lying in the slice plane fills little of the slab.
            d = p1 - p0
            along_z = abs(float(d[2])) / (float(np.linalg.norm(d)) or 1.0)
            fill = float(np.clip((r0 + r1 + along_z * slab) / slab, 0.25, 1.0))
        region = hu[box]
        if wall is not None:
            w = np.clip(0.5 - sdf / soft, 0, 1) * fill
            region += w * (10.0 - region)
            lumen = np.clip(0.5 - (sdf + wall) / soft, 0, 1) * fill
            region += lumen * (value - region)
        else:
            w = np.clip(0.5 - sdf / soft, 0, 1) * fill
            if within is not None:
                w = w * within[box]
            region += w * np.maximum(value - region, 0)
        hu[box] = region
