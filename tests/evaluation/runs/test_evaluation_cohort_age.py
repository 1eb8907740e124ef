"""Age bands for subgroups without a clinical import: the de-identified header's PatientAge
(kept by the PS3.15 profile) is used, as the header's PatientSex already is (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pair.accounts import service as accounts
from pair.algorithms.wrap import png_to_dicom
from pair.audit.service import Actor
from pair.core.node import Node
from pair.evaluation.runs.cohort import Cohort, header_age_years, select_cohort
from pair.repository.ingest import Payload, ingest_batch


@pytest.mark.parametrize(
    ("value", "years"),
    [
        ("045Y", 45),
        ("018M", 1),  # 18 months: 1 completed year
        ("006W", 0),
        ("400D", 1),  # 400 / 365.25 days
        ("", None),
        ("45Y", None),  # AS is always 4 characters
        ("045X", None),
    ],
)
def test_header_age_years(value: str, years: int | None) -> None:
    assert header_age_years(value) == years


def test_age_band_falls_back_to_patient_age(node: Node, shared_data: Path, tmp_path: Path) -> None:
    pngs = sorted((shared_data).rglob("*.png"))[:3]
    with node.db.session() as s:
        facility_id = accounts.create_facility(s, "General Hospital").id
    payloads = []
    for i, (png, age) in enumerate(zip(pngs, ("045Y", "018M", ""), strict=True)):
        ds = png_to_dicom(png, patient_id=f"P{i}", patient_sex="F", patient_age=age)
        out = tmp_path / f"{i}.dcm"
        ds.save_as(out, enforce_file_format=True)
        payloads.append(Payload(data=out.read_bytes(), label=out.name))
    actor = Actor.system("test", facility_id)
    assert all(r.accepted for r in ingest_batch(node, facility_id, payloads, "test", actor))
    with node.db.session() as s:
        cases = select_cohort(s, node.settings.storage_dir, facility_id, Cohort())
    assert sorted(c.age_band for c in cases) == ["", "0-17", "40-59"]
    assert {c.sex for c in cases} == {"Female"}
