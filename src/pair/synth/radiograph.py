"""Chest radiographs rendered as projections of the same phantom (and disease) as the CT.

The phantom is sampled on a coarse 3-D grid, converted to linear attenuation and summed along the
antero-posterior axis; the line integral is then processed like a clinical radiograph (log image,
large-kernel equalisation, tone curve, 12-bit output, detector noise). AP views magnify the heart
and have a shallower inspiration than PA views.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from pair.synth.anatomy import Anatomy, Phantom, render
from pair.synth.disease import Disease, apply, render_disease
from pair.synth.geometry import F32, Grid

FIELD_MM = 430.0
MU_WATER = 0.02  # 1/mm at a typical effective energy


def projection_grid(samples: int = 300) -> Grid:
    """Coarse grid the radiograph is projected from (``samples``² in the detector plane)."""
    half = FIELD_MM / 2
    return Grid.make((-half, half, samples), (-150.0, 150.0, 50), (-40 - half, -40 + half, samples))


def view_anatomy(a: Anatomy, view: str) -> Anatomy:
    """The patient's anatomy as seen in this view (AP: magnified heart, higher diaphragm)."""
    if view != "AP":
        return a
    return dataclasses.replace(
        a, heart=a.heart * 1.12, dome_right=a.dome_right + 12, dome_left=a.dome_left + 12
    )


class RadiographRenderer:
    """Renders one patient's radiographs; the anatomy is rasterised once per view."""

    def __init__(self, anatomy: Anatomy, size: int) -> None:
        self.anatomy = anatomy
        # The projection is rendered coarser than the detector and upsampled (cost ~ samples²).
        self.grid = projection_grid(int(np.clip(size * 0.3, 96, 300)))
        self._phantoms: dict[str, tuple[Anatomy, Phantom]] = {}

    def _phantom(self, view: str) -> tuple[Anatomy, Phantom]:
        if view not in self._phantoms:
            av = view_anatomy(self.anatomy, view)
            self._phantoms[view] = (av, render(av, self.grid, texture=False))
        return self._phantoms[view]

    def render(
        self,
        disease: Disease,
        scale: float,
        view: str,
        size: int,
        noise: float,
        rng: np.random.Generator,
    ) -> NDArray[np.uint16]:
        """A 12-bit MONOCHROME2 ("higher = more attenuation = whiter") radiograph, ``size``².

        Rows run head to feet, columns from the patient's right to left (as hung for reading).
        """
        av, ph = self._phantom(view)
        hu = ph.hu.copy()
        if disease.lesions and scale > 0:
            apply(hu, ph, render_disease(av, disease, ph, self.grid, scale))
        mu = np.clip(1.0 + hu / 1000.0, 0.0, None) * MU_WATER
        line = mu.sum(axis=1) * self.grid.spacing[1]  # (z, x)
        line = line[::-1, :]  # superior at the top
        # Hide the staircase of binary voxel edges (a real focal spot and detector blur too).
        line = ndimage.gaussian_filter(line, 1.1).astype(np.float32)
        return _process(line, size, noise, rng)


def _process(line: F32, size: int, noise: float, rng: np.random.Generator) -> NDArray[np.uint16]:
    """Log-domain processing as a CR/DX workstation does it (equalisation, edge enhancement,
    tone curve) on the coarse image, then upsampling, detector noise and 12-bit quantisation."""
    n = line.shape[0]
    low = ndimage.gaussian_filter(line, n / 40)
    img = line - 0.45 * low + 0.6 * (line - ndimage.gaussian_filter(line, 1.5))
    lo, hi = np.percentile(img, [1.0, 99.7])
    v = np.clip((img - lo) / (hi - lo), 0, 1)
    v = 0.5 + 0.5 * np.tanh(2.6 * (v - 0.52)) / np.tanh(2.6 * 0.52)
    big = ndimage.zoom(v.astype(np.float32), size / n, order=3)
    big += rng.normal(0.0, noise * 0.012, size=big.shape).astype(np.float32)
    return np.clip(big * 4095.0, 0, 4095).astype(np.uint16)
