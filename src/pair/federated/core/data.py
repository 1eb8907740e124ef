"""Site datasets: de-identified images and binary labels, read-only, split by patient.

A site's training data is a folder holding ``site.npz`` (``images`` [N, C, H, W] float32 in the
study's input normalisation, ``labels`` [N] 0/1, ``patients`` [N] pseudonyms) and ``site.json``
(counts, source). It is written once at the site (``pair fl prepare-site`` from the node's
repository, or the synthetic generator) and only read by training: nothing in it leaves the site.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pair.algorithms.manifest import InputSpec
from pair.core.errors import Invalid

DATA_FILE = "site.npz"
INFO_FILE = "site.json"


@dataclass(frozen=True)
class SiteData:
    images: NDArray[np.float32]
    labels: NDArray[np.int64]
    patients: NDArray[np.str_]

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.images.ndim != 4 or len(self.images) != n or len(self.patients) != n:
            raise Invalid(
                f"site data: images {self.images.shape}, labels {n}, patients "
                f"{len(self.patients)} do not describe the same [N, C, H, W] cases"
            )
        if n and not np.isin(self.labels, (0, 1)).all():
            raise Invalid("site data: labels must be 0 or 1")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: NDArray[np.int64]) -> SiteData:
        return SiteData(self.images[index], self.labels[index], self.patients[index])

    @property
    def positives(self) -> int:
        return int(self.labels.sum())


# 2.5D CT: a fixed lung window on Hounsfield units (centre -600, width 1500) — per-image
# percentile scaling would stretch each slice differently and break the slab's HU relation
CT_WINDOW = {"kind": "window", "center": -600.0, "width": 1500.0}
SLAB_STEP = 1


def study_input_spec(size: int, slices: int = 1) -> InputSpec:
    """The algorithm-package input spec matching how site data are prepared (and exported).

    One image (``slices`` 1): one channel, percentile scaling. A 2.5D CT slab (``slices`` > 1):
    ``slices`` adjacent CT slices as channels, lung window, ends replicated. Site data are
    prepared with this spec through ``pair.algorithms.preprocess`` and the exported manifest
    carries it, so training and evaluation inputs are the same by construction.
    """
    if slices > 1:
        return InputSpec.model_validate(
            {
                "tensor_name": "image",
                "size": {"height": size, "width": size},
                "channels": slices,
                "scaling": CT_WINDOW,
                "normalization": {"kind": "range", "min": 0.0, "max": 1.0},
                "invert_monochrome1": True,
                "slab": {"slices": slices, "step": SLAB_STEP, "edges": "replicate"},
            }
        )
    return InputSpec.model_validate(
        {
            "tensor_name": "image",
            "size": {"height": size, "width": size},
            "channels": 1,
            "scaling": {"kind": "percentile", "lower": 0.5, "upper": 99.5},
            "normalization": {"kind": "range", "min": 0.0, "max": 1.0},
            "invert_monochrome1": True,
        }
    )


def save_site(folder: Path, data: SiteData, info: dict[str, Any]) -> None:
    """Write a site folder atomically (a crash leaves no half-written ``site.npz``)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.part")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, images=data.images, labels=data.labels, patients=data.patients)
        os.replace(tmp, folder / DATA_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    summary = {
        **info,
        "cases": len(data),
        "positives": data.positives,
        "patients": len(np.unique(data.patients)),
        "shape": list(data.images.shape[1:]),
    }
    (folder / INFO_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8")


def load_site(folder: Path) -> SiteData:
    """Read a site folder (read-only: the arrays are copied out, the files never touched)."""
    path = Path(folder) / DATA_FILE
    if not path.is_file():
        raise Invalid(
            f"{folder}: no {DATA_FILE}; prepare the site data first (pair fl prepare-site)"
        )
    with np.load(path, allow_pickle=False) as z:
        return SiteData(
            np.asarray(z["images"], np.float32),
            np.asarray(z["labels"], np.int64),
            np.asarray(z["patients"]).astype(str),
        )


def _rank(seed: int, patient: str) -> str:
    return hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest()


def patient_split(
    data: SiteData, validation_fraction: float, seed: int
) -> tuple[SiteData, SiteData]:
    """Deterministic patient-level split: all images of a patient fall on the same side.

    Patients are ordered by SHA-256 of ``seed:pseudonym`` (stable across machines and runs,
    independent of file order); the first ``ceil(fraction × patients)`` form validation.
    """
    patients = sorted(set(data.patients.tolist()), key=lambda p: _rank(seed, p))
    if len(patients) < 2:
        raise Invalid(f"site data: {len(patients)} patient(s); a split needs at least 2")
    n_val = min(len(patients) - 1, max(1, math.ceil(validation_fraction * len(patients))))
    val_set = set(patients[:n_val])
    is_val = np.array([p in val_set for p in data.patients.tolist()])
    return data.subset(np.flatnonzero(~is_val)), data.subset(np.flatnonzero(is_val))


def pool(parts: list[SiteData]) -> SiteData:
    """Concatenate sites (the pooled baseline of the benchmark; not a federated operation)."""
    return SiteData(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.patients for p in parts]),
    )
