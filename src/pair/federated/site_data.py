"""Read-only adapter from a site's PAIR node to its federated training data.

Selects series with the node's cohort query (``pair.evaluation.runs.cohort.select_cohort``, the
same selection local evaluation uses), labels each case from the clinical record (e.g. RT-PCR
``covid19_positive``) or the final signed report category, and prepares the first image of each
series (for a 2.5D CT study, the slab centred on its middle slice) exactly as an algorithm package
would (``pair.algorithms.preprocess``). Only pseudonyms and pixel arrays are written; it never
changes the node's database or files.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from pair.algorithms.manifest import InputSpec
from pair.algorithms.preprocess import (
    preprocess_dataset,
    preprocess_slabs,
    read_dataset,
    slice_order,
)
from pair.core.errors import Invalid
from pair.evaluation.runs.cohort import CohortCase, parse_cohort, select_cohort
from pair.federated.core.data import SiteData, save_site, study_input_spec
from pair.federated.study import Study
from pair.reporting.labels import final_labels


def _label(study: Study, case: CohortCase, report: dict[str, str]) -> int | None:
    spec = study.labels
    if spec.source == "clinical":
        value = case.clinical.get(spec.field)
    else:
        value = report.get(case.study_uid)
    if value is None:
        return None
    text = str(value).lower()
    if text in {v.lower() for v in spec.positive}:
        return 1
    if text in {v.lower() for v in spec.negative}:
        return 0
    return None


def _case_image(case: CohortCase, spec: InputSpec) -> np.ndarray:
    """One training input per series: the first image, or for a 2.5D study the slab centred
    on the series' middle slice (along the slice normal), built by the package preprocessing."""
    if spec.slab is None:
        return preprocess_dataset(read_dataset(case.paths[0]), spec)[0]
    datasets = [read_dataset(p) for p in case.paths]
    middle = slice_order(datasets)[len(datasets) // 2]
    return preprocess_slabs(datasets, spec)[middle]


def site_data_from_node(
    session: Session, storage_root: Path, facility_id: int, study: Study, site: str
) -> tuple[SiteData, dict[str, int]]:
    """The site's cases for ``study`` and why cases were left out (reason → count)."""
    cohort = parse_cohort(study.site(site).cohort)
    report: dict[str, str] = {}
    if study.labels.source == "report":
        report = {
            lab.study_uid: str(lab.summary_value)
            for lab in final_labels(session, facility_id)
            if lab.module_id == study.labels.field
        }
    spec = study_input_spec(study.input.size, study.input.slices)
    images, labels, patients = [], [], []
    skipped: Counter[str] = Counter()
    for case in select_cohort(session, storage_root, facility_id, cohort):
        y = _label(study, case, report)
        if y is None:
            skipped["no usable label"] += 1
            continue
        if not case.paths:
            skipped["no instance"] += 1
            continue
        try:
            image = _case_image(case, spec)
        except Exception:  # unreadable pixels: count, never log identifiers
            skipped["unreadable image"] += 1
            continue
        images.append(image)
        labels.append(y)
        patients.append(case.pseudonym)
    if not images:
        raise Invalid(f"site {site}: the cohort selects no labelled case ({dict(skipped)})")
    data = SiteData(
        np.stack(images).astype(np.float32), np.asarray(labels, np.int64), np.asarray(patients)
    )
    return data, dict(skipped)


def prepare_site(
    session: Session, storage_root: Path, facility_id: int, study: Study, site: str, out: Path
) -> SiteData:
    """Write the site folder the FLARE client script reads (``--data`` / PAIR_FL_SITE_DATA)."""
    data, skipped = site_data_from_node(session, storage_root, facility_id, study, site)
    info = {
        "site": site,
        "source": "pair node",
        "study": f"{study.id} v{study.version}",
        "cohort": study.site(site).cohort,
        "labels": f"{study.labels.source}:{study.labels.field}",
        "skipped": skipped,
    }
    save_site(out, data, info)
    return data
