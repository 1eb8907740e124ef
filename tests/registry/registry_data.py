"""A small hub: three member sites with studies, clinical records, signed reports, stored files
and a quarantined instance, each row crafted so that one data-quality finding fires.

| study | site | modality | date | COVID | made to trigger |
|---|---|---|---|---|---|
| A1 | HOSPA | CR | 2020-03-11 | Yes | nothing (complete); report typical |
| A2 | HOSPA | CT | 2020-03-12 | No | nothing (complete); report negative |
| A3 | HOSPA | CR | 2020-04-13 | Yes | outcome missing |
| B1 | HOSPB | CR | 2020-03-20 | Yes | RT-PCR (day 10) after discharge (day 5) |
| B2 | HOSPB | DX | 2020-03-22 | No | received 2020-08-01: late submission |
| B3 | HOSPB | CR | 2020-03-25 | No | age 150: out of range |
| C1 | HOSPC | CT | 2030-01-01 | Yes | study date after receipt (future) |
| C2 | HOSPC | CR | 2020-05-01 | — | no clinical record: every required element missing |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.clinical.dictionary import load_dictionary
from pair.clinical.models import ClinicalRecord
from pair.core.node import Node
from pair.reporting import service as reports
from pair.repository.models import Instance, QuarantineItem, Series, Study
from tests.factories import ct_instance, to_bytes
from tests.portal_data import add_case

PASSWORD = "Ward7-Lumen-Quartz"
SITES = {"A": ("Site Alpha", "HOSPA"), "B": ("Site Beta", "HOSPB"), "C": ("Site Gamma", "HOSPC")}
COMPLETE: dict[str, Any] = {
    "covid19_positive": "Yes",
    "age_at_index": 45,
    "sex": "Female",
    "test_method": "RT-PCR",
    "test_result_text": "Positive",
    "test_days_from_index": 0,
    "days_to_hospital_admission": 0,
    "days_to_hospital_discharge": 5,
    "outcome": "Discharged home",
}
REPORT_INPUTS: dict[str, dict[str, Any]] = {
    "typical": {"opacities": "present", "distribution": ["multifocal_bilateral_peripheral"]},
    "negative": {"opacities": "absent"},
}
# key: (site, n, modality, study date, received date, clinical changes or None, report category)
CASES: dict[str, tuple[str, int, str, str, str, dict[str, Any] | None, str | None]] = {
    "A1": ("A", 1, "CR", "20200311", "2020-03-12", {}, "typical"),
    "A2": (
        "A",
        2,
        "CT",
        "20200312",
        "2020-03-13",
        {"covid19_positive": "No", "age_at_index": 70, "sex": "Male"},
        "negative",
    ),
    "A3": ("A", 3, "CR", "20200413", "2020-04-14", {"outcome": None, "age_at_index": 30}, None),
    "B1": (
        "B",
        1,
        "CR",
        "20200320",
        "2020-03-21",
        {"test_days_from_index": 10, "sex": "Male", "age_at_index": 60},
        None,
    ),
    "B2": (
        "B",
        2,
        "DX",
        "20200322",
        "2020-08-01",
        {"covid19_positive": "No", "age_at_index": 20},
        None,
    ),
    "B3": (
        "B",
        3,
        "CR",
        "20200325",
        "2020-03-26",
        {"covid19_positive": "No", "age_at_index": 150},
        None,
    ),
    "C1": ("C", 1, "CT", "20300101", "2020-05-01", {"age_at_index": 85}, None),
    "C2": ("C", 2, "CR", "20200501", "2020-05-02", None, None),
}


@dataclass
class Hub:
    facilities: dict[str, int] = field(default_factory=dict)  # "A" -> id
    studies: dict[str, str] = field(default_factory=dict)  # "A1" -> study UID
    pseudonyms: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # SOP instance UID -> stored bytes


def build_hub(node: Node, users: dict[str, tuple[str, str]] | None = None) -> Hub:
    """The hub's tables as received from three sites; ``users``: name -> (site key, role)."""
    hub = Hub()
    version = load_dictionary().version
    with node.db.session() as s:
        fac = {}
        for key, (name, code) in SITES.items():
            fac[key] = accounts.create_facility(s, name, code)
            hub.facilities[key] = fac[key].id
        for name, (key, role) in (users or {}).items():
            accounts.create_user(s, fac[key], name, role, PASSWORD, allow_operator=True)
        for case, (key, n, modality, date, received, changes, _) in CASES.items():
            patient = add_case(s, fac[key], n, modality=modality, study_date=date, instances=2)
            study = s.scalars(select(Study).where(Study.patient_pk == patient.id)).one()
            study.created_at = datetime.fromisoformat(received).replace(tzinfo=UTC)
            hub.studies[case], hub.pseudonyms[case] = study.study_uid, patient.pseudonym
            s.execute(
                Series.__table__.update()
                .where(Series.study_pk == study.id)
                .values(manufacturer=f"Vendor{key}")
            )
            if changes is not None:
                data = {**COMPLETE, **changes}
                s.add(
                    ClinicalRecord(
                        patient_pk=patient.id,
                        facility_id=fac[key].id,
                        data={k: v for k, v in data.items() if v is not None},
                        dictionary_version=version,
                    )
                )
        s.add(
            QuarantineItem(
                facility_id=fac["C"].id,
                sop_instance_uid="2.25.999",
                storage_path="q/1",
                reasons=[{"tag": "PatientName"}],
            )
        )
        s.flush()
        for inst, series, study in s.execute(
            select(Instance, Series, Study)
            .join(Series, Series.id == Instance.series_pk)
            .join(Study, Study.id == Series.study_pk)
        ):
            ds = ct_instance(
                study_uid=study.study_uid,
                series_uid=series.series_uid,
                patient={"PatientName": study.patient_name, "PatientID": study.patient_id_value},
            )
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = inst.sop_instance_uid
            data = to_bytes(ds)
            path = node.settings.storage_dir / inst.storage_path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            hub.files[inst.sop_instance_uid] = data
    for case, (key, *_rest, category) in CASES.items():
        if category:
            rad = Actor(None, "rad", hub.facilities[key], "radiologist", "test")
            with node.db.session() as s:
                report = reports.create_draft(
                    s, rad, hub.studies[case], "rsna-cxr-covid", REPORT_INPUTS[category]
                )
                reports.sign(s, rad, report.id)
    return hub
