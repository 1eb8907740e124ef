"""Sampling grids and small rasterisers shared by the CT and radiograph renderers.

Everything is defined in patient coordinates in millimetres (DICOM LPS: +x towards the patient's
left, +y posterior, +z superior), so one phantom can be sampled on a CT grid or on the coarse
grid that a radiograph is projected from, and both show the same anatomy and disease.
Volumes are indexed ``[z, y, x]`` (slice, row, column), matching an axial DICOM image stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.floating[Any]]
"""Float arrays (float32 in practice; float64 intermediates are accepted)."""
Coord = F32 | np.floating[Any] | float
"""A coordinate: an array of them or a single value."""
Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """A regular, axis-aligned sampling grid with ascending coordinates on each axis."""

    x: F32
    y: F32
    z: F32

    @classmethod
    def make(
        cls,
        x: tuple[float, float, int],
        y: tuple[float, float, int],
        z: tuple[float, float, int],
    ) -> Grid:
        """Grid from ``(first, last, count)`` per axis (endpoints included)."""
        return cls(*(np.linspace(a, b, n, dtype=np.float32) for a, b, n in (x, y, z)))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.z), len(self.y), len(self.x))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Spacing (dz, dy, dx) in mm; 1.0 on an axis with a single sample."""

        def step(a: F32) -> float:
            return float(a[1] - a[0]) if len(a) > 1 else 1.0

        return (step(self.z), step(self.y), step(self.x))

    def coords(self, box: Box | None = None) -> tuple[F32, F32, F32]:
        """Broadcastable ``(Z, Y, X)`` coordinate arrays, optionally restricted to ``box``."""
        bz, by, bx = box or (slice(None), slice(None), slice(None))
        return (
            self.z[bz][:, None, None],
            self.y[by][None, :, None],
            self.x[bx][None, None, :],
        )

    def box(self, lo: NDArray[np.float64], hi: NDArray[np.float64]) -> Box | None:
        """Index box covering the physical box ``lo..hi`` (x, y, z order); None if empty."""
        out = []
        for axis, a, b in ((self.z, lo[2], hi[2]), (self.y, lo[1], hi[1]), (self.x, lo[0], hi[0])):
            i0 = int(np.searchsorted(axis, a, side="left"))
            i1 = int(np.searchsorted(axis, b, side="right"))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return (out[0], out[1], out[2])


def segment_sdf(
    grid: Grid,
    p0: NDArray[np.float64],
    p1: NDArray[np.float64],
    r0: float,
    r1: float,
    slab: float = 0.0,
) -> tuple[Box, F32] | None:
    """Signed distance (mm) to a tapered tube from ``p0`` (radius r0) to ``p1`` (radius r1).

    Computed only inside the tube's bounding box, returned with that box; None when the tube
    misses the grid. Negative values are inside the tube. With ``slab`` (a slice thickness) each
    voxel stands for a slab of that thickness: the tube counts as inside when it crosses the slab
    (approximately), as on a thick-slice CT image.
    """
    r = max(r0, r1)
    pad = np.array([r + 1.0, r + 1.0, r + 1.0 + slab / 2])
    lo = np.minimum(p0, p1) - pad
    hi = np.maximum(p0, p1) + pad
    box = grid.box(lo, hi)
    if box is None:
        return None
    z, y, x = grid.coords(box)
    d = (p1 - p0).astype(np.float32)
    length2 = float(d @ d) or 1e-6
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / length2
    t = np.clip(t, 0.0, 1.0)
    dz = np.abs(z - (p0[2] + t * d[2]))
    if slab:
        dz = np.maximum(dz - slab / 2, 0.0)
    dist = np.sqrt((x - (p0[0] + t * d[0])) ** 2 + (y - (p0[1] + t * d[1])) ** 2 + dz**2)
    return box, (dist - (r0 + t * (r1 - r0))).astype(np.float32)


def ellipsoid_value(
    grid: Grid, centre: NDArray[np.float64], axes: NDArray[np.float64], box: Box
) -> F32:
    """``sum(((p - c) / a)^2)`` over the box: < 1 inside the axis-aligned ellipsoid."""
    z, y, x = grid.coords(box)
    return (
        ((x - centre[0]) / axes[0]) ** 2
        + ((y - centre[1]) / axes[1]) ** 2
        + ((z - centre[2]) / axes[2]) ** 2
    ).astype(np.float32)


@dataclass(frozen=True)
class SmoothField:
    """A smooth random field made of a few random plane waves, defined in physical space.

    Unlike filtered voxel noise it takes the same values whatever grid samples it, so a lesion
    has the same irregular shape on the CT and on the radiograph projection grid.
    """

    k: NDArray[np.float32]  # (n, 3) angular wave vectors, rad/mm
    phase: NDArray[np.float32]  # (n,)

    @classmethod
    def random(
        cls, rng: np.random.Generator, wavelength: tuple[float, float], n: int = 6
    ) -> SmoothField:
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength, size=(n, 1))
        k = (2 * np.pi / lam * direction).astype(np.float32)
        return cls(k, rng.uniform(0, 2 * np.pi, size=n).astype(np.float32))

    def __call__(self, grid: Grid, box: Box | None = None) -> F32:
        """Field values in ``[-1, 1]`` (roughly) over the grid or the box."""
        z, y, x = grid.coords(box)
        acc = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=np.float32)
        # cos(a + b + c) = Re(e^ia e^ib e^ic): separable, so no full-size cosine is evaluated.
        for (kx, ky, kz), ph in zip(self.k, self.phase, strict=True):
            zy = np.exp(1j * (z * kz + ph)).astype(np.complex64) * np.exp(1j * y * ky).astype(
                np.complex64
            )
            ex = np.exp(1j * x * kx).astype(np.complex64)
            acc += (zy.real * ex.real) - (zy.imag * ex.imag)
        return acc * np.float32(np.sqrt(2.0 / len(self.phase)))
