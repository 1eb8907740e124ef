"""Synthetic multi-site chest-radiograph data for tests and the benchmark, built on ``pair synth``.

Each image is a ``pair synth`` radiograph (phantom anatomy projected, with the patient's disease
sampled from the site's RT-PCR result as in ``pair synth``'s generator), so labels are RT-PCR and
the image evidence is the same noisy, partly missing evidence the synthetic node data carry.
Sites differ the way real ones do: COVID-19 prevalence and portable-AP fraction from the
``pair synth`` site archetypes, detector noise (mAs range), and a per-site tone curve (gamma)
and blur standing in for vendor processing (intensity/contrast shift that survives percentile
scaling). Images are then prepared exactly like node data (``study_input_spec``).

Each site folder also gets ``ground_truth.csv``: what the generator drew for every image
(RT-PCR result, RSNA category, lesion extent and kinds, view), so image-borne labels (the
category a radiologist's report would give) can be used instead of RT-PCR (``image_labels``).
"""

from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from pair.algorithms.preprocess import resize, scale_to_unit
from pair.core.errors import Invalid
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


GROUND_TRUTH_FILE = "ground_truth.csv"
GROUND_TRUTH_FIELDS = ["patient", "rtpcr_result", "rsna_category", "extent", "findings", "view"]

# Binary labels read off the drawn RSNA category (what the image shows), beside RT-PCR.
IMAGE_LABELS = {
    "opacity": lambda category: category != "negative",  # any opacity vs none
    "typical": lambda category: category == "typical",  # typical COVID-19 pattern vs the rest
}


def synth_site(site_index: int, cases: int, size: int, seed: int) -> SiteData:
    """``cases`` one-image patients of ``pair synth`` site ``site_index`` (0-based)."""
    return synth_site_with_truth(site_index, cases, size, seed)[0]


def synth_site_with_truth(
    site_index: int, cases: int, size: int, seed: int
) -> tuple[SiteData, list[dict[str, Any]]]:
    """``synth_site`` plus one ground-truth row per image (``GROUND_TRUTH_FIELDS``)."""
    rng = np.random.default_rng([seed, 7919, site_index])
    site = config.site_archetype(site_index)
    clin = config.clinical()
    kinds = {"typical": clin["typical_kinds"], "atypical": clin["atypical_kinds"]}
    shift = SHIFTS[site_index % len(SHIFTS)]
    spec = study_input_spec(size)
    render_size = max(size, 64)
    images, labels, patients = [], [], []
    truth: list[dict[str, Any]] = []
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
        truth.append(
            {
                "patient": patients[-1],
                "rtpcr_result": "positive" if positive else "negative",
                "rsna_category": category,
                "extent": f"{extent:.4f}",
                "findings": ";".join(disease.kinds),
                "view": view,
            }
        )
    data = SiteData(
        np.stack(images).astype(np.float32),
        np.asarray(labels, np.int64),
        np.asarray(patients),
    )
    return data, truth


def read_ground_truth(folder: Path) -> list[dict[str, str]]:
    """The ``ground_truth.csv`` rows of a synthetic site folder, in image order."""
    path = Path(folder) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise Invalid(f"{folder}: no {GROUND_TRUTH_FILE} (not written by write_synthetic_sites)")
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def image_labels(data: SiteData, truth: list[dict[str, str]], label: str) -> SiteData:
    """``data`` with its RT-PCR labels replaced by the image-borne ``label`` (``IMAGE_LABELS``)
    from the site's ground truth; images and patients unchanged."""
    if label not in IMAGE_LABELS:
        raise Invalid(f"unknown image label {label!r}; one of {sorted(IMAGE_LABELS)}")
    if [r["patient"] for r in truth] != data.patients.tolist():
        raise Invalid("ground truth rows do not match the site's images (patients differ)")
    rule = IMAGE_LABELS[label]
    labels = np.asarray([int(rule(r["rsna_category"])) for r in truth], np.int64)
    return SiteData(data.images, labels, data.patients)


def write_synthetic_sites(
    out: Path, sites: int, cases: list[int] | int, size: int, seed: int, jobs: int = 1
) -> dict[str, Path]:
    """Write ``site-1``… folders under ``out``; returns site name → folder.

    ``jobs`` > 1 draws the sites in parallel processes; each site has its own random stream,
    so the files are the same either way."""
    counts = cases if isinstance(cases, list) else [cases] * sites
    args = [(k, counts[k], size, seed) for k in range(sites)]
    if jobs > 1:
        with ProcessPoolExecutor(min(jobs, sites)) as pool:
            drawn = list(pool.map(synth_site_with_truth, *zip(*args, strict=True)))
    else:
        drawn = [synth_site_with_truth(*a) for a in args]
    folders = {}
    for k, (data, truth) in enumerate(drawn):
        name = f"site-{k + 1}"
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
        with (out / name / GROUND_TRUTH_FILE).open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=GROUND_TRUTH_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(truth)
        folders[name] = out / name
    return folders
