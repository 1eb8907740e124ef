"""Synthetic multi-site chest-radiograph data for tests and the benchmark, built on ``pair synth``.

Each image is a ``pair synth`` radiograph (phantom anatomy projected, with the patient's disease
sampled from the site's RT-PCR result as in ``pair synth``'s generator), so labels are RT-PCR and
the image evidence is the same noisy, partly missing evidence the synthetic node data carry.
Sites differ the way real ones do: COVID-19 prevalence and portable-AP fraction from the
``pair synth`` site archetypes, detector noise (mAs range), and a per-site tone curve (gamma)
and blur standing in for vendor processing (intensity/contrast shift that survives percentile
scaling). Images are then prepared exactly like node data (``study_input_spec``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pair.algorithms.preprocess import resize, scale_to_unit
from pair.federated.core.data import SiteData, save_site, study_input_spec
from pair.synth import config
from pair.synth.anatomy import random_anatomy
from pair.synth.disease import sample_disease
from pair.synth.radiograph import RadiographRenderer
from pair.synth.sampling import weighted


@dataclass(frozen=True)
class SiteShift:
    """Per-site acquisition differences on top of the archetype (tone curve, blur)."""

    gamma: float
    blur: float


# Three deliberately different vendors: flat/sharp, neutral, contrasty/soft.
SHIFTS = (SiteShift(0.7, 0.0), SiteShift(1.0, 0.6), SiteShift(1.5, 1.2))


def synth_site(site_index: int, cases: int, size: int, seed: int) -> SiteData:
    """``cases`` one-image patients of ``pair synth`` site ``site_index`` (0-based)."""
    rng = np.random.default_rng([seed, 7919, site_index])
    site = config.site_archetype(site_index)
    clin = config.clinical()
    kinds = {"typical": clin["typical_kinds"], "atypical": clin["atypical_kinds"]}
    shift = SHIFTS[site_index % len(SHIFTS)]
    spec = study_input_spec(size)
    render_size = max(size, 64)
    images, labels, patients = [], [], []
    for i in range(cases):
        positive = bool(rng.random() < site.covid_prevalence)
        category = weighted(rng, clin["rsna_given_pcr"]["positive" if positive else "negative"])
        extent = 0.0 if category == "negative" else float(rng.beta(1.6, 2.4))
        sex = "M" if rng.random() < 0.5 else "F"
        anatomy = random_anatomy(rng, sex)
        disease = sample_disease(anatomy, rng, category, extent, kinds)
        view = "AP" if rng.random() < site.cxr.portable_ap_fraction else "PA"
        mas = float(rng.uniform(*site.cxr.mas)) * (0.7 if view == "AP" else 1.0)
        raw = RadiographRenderer(anatomy, render_size).render(
            disease, 1.0, view, render_size, 1.6 / np.sqrt(mas), rng
        )
        unit = scale_to_unit(raw.astype(np.float32), spec)
        unit = unit**shift.gamma
        if shift.blur:
            unit = ndimage.gaussian_filter(unit, shift.blur)
        img = np.clip(resize(unit, size, size, spec.resampling), 0.0, 1.0)
        images.append(img[None])
        labels.append(int(positive))
        patients.append(f"S{site_index + 1}P{i + 1:05d}")
    return SiteData(
        np.stack(images).astype(np.float32),
        np.asarray(labels, np.int64),
        np.asarray(patients),
    )


def write_synthetic_sites(
    out: Path, sites: int, cases: list[int] | int, size: int, seed: int
) -> dict[str, Path]:
    """Write ``site-1``… folders under ``out``; returns site name → folder."""
    counts = cases if isinstance(cases, list) else [cases] * sites
    folders = {}
    for k in range(sites):
        name = f"site-{k + 1}"
        data = synth_site(k, counts[k], size, seed)
        shift = SHIFTS[k % len(SHIFTS)]
        info = {
            "site": name,
            "source": "synthetic (pair synth radiographs)",
            "archetype": config.site_archetype(k).key,
            "gamma": shift.gamma,
            "blur": shift.blur,
            "seed": seed,
        }
        save_site(out / name, data, info)
        folders[name] = out / name
    return folders
