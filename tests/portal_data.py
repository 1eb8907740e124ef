"""Test data for portal/clinical tests: facilities, users and pseudonymous cases written straight
into the repository index and the private mapping store (as the ingest pipeline would)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from pair.accounts import service as accounts
from pair.accounts.models import Facility
from pair.deid.models import PrivatePatientIdentity, PrivateStudyIdentity
from pair.repository.models import Instance, Patient, Series, Study

PASSWORD = "correct-horse-battery"


@dataclass
class World:
    facilities: dict[str, int] = field(default_factory=dict)
    cases: dict[str, int] = field(default_factory=dict)  # pseudonym -> Patient.id


def add_case(
    session: Session,
    facility: Facility,
    n: int,
    *,
    modality: str = "CT",
    study_date: str = "20200310",
    description: str = "CT CHEST WITHOUT CONTRAST",
    instances: int = 3,
) -> Patient:
    pseudonym = f"{facility.code}-{n:05d}"
    patient = Patient(facility_id=facility.id, pseudonym=pseudonym, patient_sex="F")
    session.add(patient)
    session.flush()
    session.add(
        PrivatePatientIdentity(
            facility_id=facility.id,
            original_key=f"key-{pseudonym}",
            original_patient_id=f"MRN{facility.id}{n:04d}",
            original_patient_name="DOE^JANE",
            pseudonym=pseudonym,
            date_shift_days=-17,
        )
    )
    study_uid = f"2.25.{facility.id}{n:04d}1"
    session.add(
        PrivateStudyIdentity(
            facility_id=facility.id,
            original_study_uid=f"1.2.3.{facility.id}.{n}",
            original_accession_number=f"ACC{facility.id}{n:04d}",
            study_uid=study_uid,
            pseudonym=pseudonym,
        )
    )
    study = Study(
        facility_id=facility.id,
        patient_pk=patient.id,
        study_uid=study_uid,
        study_date=study_date,
        study_description=description,
        modalities=modality,
        patient_id_value=pseudonym,
        patient_name=pseudonym,
        num_series=1,
        num_instances=instances,
    )
    session.add(study)
    session.flush()
    series = Series(
        study_pk=study.id,
        series_uid=f"{study_uid}.1",
        modality=modality,
        series_number=1,
        series_description=f"{modality} series",
        num_instances=instances,
    )
    session.add(series)
    session.flush()
    for i in range(instances):
        session.add(
            Instance(
                series_pk=series.id,
                sop_instance_uid=f"{study_uid}.1.{i + 1}",
                instance_number=i + 1,
                storage_path=f"x/{study_uid}.{i}",
                sha256="0" * 64,
                size=1,
            )
        )
    session.flush()
    return patient


def build_world(session: Session, cases_per_facility: int = 3) -> World:
    """Two facilities (A with cases, B with one case) and one user per role in A, one in B."""
    world = World()
    a = accounts.create_facility(session, "Hospital A", "HOSPA")
    b = accounts.create_facility(session, "Hospital B", "HOSPB")
    world.facilities = {"A": a.id, "B": b.id}
    for role in ("admin", "data-manager", "radiologist"):
        accounts.create_user(session, a, f"{role.replace('-', '')}-a", role, PASSWORD)
    accounts.create_user(session, b, "datamanager-b", "data-manager", PASSWORD)
    for n in range(1, cases_per_facility + 1):
        p = add_case(
            session,
            a,
            n,
            modality="CT" if n % 2 else "CR",
            study_date=f"202003{10 + n:02d}",
            description="CT CHEST" if n % 2 else "CHEST PA",
        )
        world.cases[p.pseudonym] = p.id
    p = add_case(session, b, 1)
    world.cases[p.pseudonym] = p.id
    return world
