"""A small world for report tests: two facilities, users with tokens, a CT study with images."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import Dataset

from pair.accounts import service as accounts
from pair.core.node import Node
from pair.reporting.api import SRStoreFactory, get_sr_store
from pair.repository.models import Instance, Patient, Series, Study
from pair.web.app import create_app

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class World:
    node: Node
    client: TestClient
    tokens: dict[str, str]
    facility: dict[str, int]
    study_uid: str = "1.2.826.0.1.3680043.8.498.100"
    empty_study_uid: str = "1.2.826.0.1.3680043.8.498.200"
    stored: list[Dataset] = field(default_factory=list)

    def h(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


def add_study(node: Node, facility_id: int, study_uid: str, pseudonym: str, images: int) -> None:
    with node.db.session() as s:
        patient = Patient(facility_id=facility_id, pseudonym=pseudonym)
        s.add(patient)
        s.flush()
        study = Study(
            facility_id=facility_id,
            patient_pk=patient.id,
            study_uid=study_uid,
            study_date="20200401",
            modalities="CT",
            accession_number="ACC1",
        )
        s.add(study)
        s.flush()
        if images:
            series = Series(study_pk=study.id, series_uid=study_uid + ".1", modality="CT")
            s.add(series)
            s.flush()
            for i in range(images):
                s.add(
                    Instance(
                        series_pk=series.id,
                        sop_instance_uid=f"{study_uid}.1.{i + 1}",
                        sop_class_uid=CT_IMAGE,
                        storage_path=f"x/{i}",
                        sha256="0" * 64,
                        size=1,
                    )
                )


@pytest.fixture
def world(node: Node) -> Iterator[World]:
    tokens: dict[str, str] = {}
    with node.db.session() as s:
        a = accounts.create_facility(s, "General Hospital")
        b = accounts.create_facility(s, "Other Clinic")
        facility = {"a": a.id, "b": b.id}
        for name, fac, role in [
            ("rad1", a, "radiologist"),
            ("res1", a, "researcher"),
            ("adm1", a, "admin"),
            ("rad2", b, "radiologist"),
        ]:
            user = accounts.create_user(s, fac, name, role)
            tokens[name] = accounts.create_token(s, user)[1]
    add_study(node, facility["a"], World.study_uid, "GH-0001", images=2)
    add_study(node, facility["a"], World.empty_study_uid, "GH-0002", images=0)
    app = create_app(node)
    w = World(node, TestClient(app), tokens, facility)

    def store(ds: Dataset) -> Any:
        w.stored.append(ds)

    def factory() -> SRStoreFactory:
        return lambda node, actor, facility_id: store

    app.dependency_overrides[get_sr_store] = factory
    yield w
