"""Clinical data: dictionary rules, case search, API (roles, facility scope, 422 details), audit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.audit.models import AuditEvent, ChangeEvent
from pair.clinical.dictionary import load_dictionary
from pair.clinical.models import ClinicalRecord
from pair.clinical.service import CaseQuery, search_cases
from pair.core.node import Node
from pair.web.app import create_app
from tests.portal_data import World, build_world


@pytest.fixture
def world(node: Node) -> World:
    with node.db.session() as s:
        return build_world(s)


@pytest.fixture
def client(node: Node, world: World) -> Iterator[TestClient]:
    with TestClient(create_app(node)) as c:
        yield c


def bearer(node: Node, user: str) -> dict[str, str]:
    with node.db.session() as s:
        _, plain = accounts.create_token(s, accounts.get_user(s, user))
    return {"Authorization": f"Bearer {plain}"}


def test_dictionary_drives_fields_and_rules() -> None:
    d = load_dictionary()
    assert d.version and {"covid19_positive", "age_at_index", "outcome"} <= set(d.names)
    assert d.get("sex") is not None and d.get("sex").values == ("Female", "Male", "Not Reported")  # type: ignore[union-attr]
    record, errors = d.validate({"sex": "female", "icu_indicator": "yes", "age_at_index": "93"})
    assert errors == []
    assert record["sex"] == "Female" and record["icu_indicator"] is True
    assert record["age_at_index"] == 89 and record["age_at_index_gt89"] == "Yes"
    _, errors = d.validate(
        {
            "age_at_index": "4x",
            "covid19_positive": "maybe",
            "ventilator_indicator": "2",
            "days_to_hospital_admission": 3,
            "days_to_hospital_discharge": 1,
            "test_days_from_index": -5000,
            "bogus": 1,
        }
    )
    rules = {(e.field, e.rule) for e in errors}
    assert rules == {
        ("age_at_index", "integer"),
        ("covid19_positive", "enum"),
        ("ventilator_indicator", "boolean"),
        ("days_to_hospital_discharge", "not_before"),
        ("test_days_from_index", "min"),
        ("bogus", "unknown_field"),
    }
    schema = d.json_schema()
    assert set(schema["properties"]) == set(d.names)


def test_search_cases_filters_sort_and_scope(node: Node, world: World) -> None:
    a, b = world.facilities["A"], world.facilities["B"]
    with node.db.session() as s:
        r = search_cases(s, a, CaseQuery())
        assert r.total == 3 and [c.pseudonym for c in r.items] == [
            "HOSPA-00001",
            "HOSPA-00002",
            "HOSPA-00003",
        ]
        assert search_cases(s, None, CaseQuery()).total == 4
        assert search_cases(s, b, CaseQuery()).total == 1
        assert [c.pseudonym for c in search_cases(s, a, CaseQuery(modality="cr")).items] == [
            "HOSPA-00002"
        ]
        dated = search_cases(
            s, a, CaseQuery(study_date_from="2020-03-12", study_date_to="20200313")
        )
        assert [c.pseudonym for c in dated.items] == ["HOSPA-00002", "HOSPA-00003"]
        assert search_cases(s, a, CaseQuery(text="chest pa")).total == 1
        page = search_cases(s, a, CaseQuery(sort="first_study", order="desc", limit=2, offset=0))
        assert page.total == 3 and [c.pseudonym for c in page.items] == [
            "HOSPA-00003",
            "HOSPA-00002",
        ]


def test_clinical_api_roles_scope_validation_and_audit(
    node: Node, world: World, client: TestClient
) -> None:
    case_a, case_b = world.cases["HOSPA-00001"], world.cases["HOSPB-00001"]
    dm, rad = bearer(node, "datamanager-a"), bearer(node, "radiologist-a")
    body = {
        "covid19_positive": "Yes",
        "sex": "Male",
        "age_at_index": 67,
        "test_method": "RT-PCR",
        "test_result_text": "Positive",
        "test_days_from_index": 0,
        "icu_indicator": True,
        "days_to_hospital_admission": 1,
        "days_to_hospital_discharge": 9,
        "outcome": "Discharged home",
    }
    r = client.put(f"/api/cases/{case_a}/clinical", json=body, headers=dm)
    assert r.status_code == 200, r.text
    assert r.json()["age_at_index_gt89"] == "No"
    assert client.get(f"/api/cases/{case_a}/clinical", headers=rad).json()["sex"] == "Male"
    # radiologists read but do not write; other facilities' cases do not exist for you
    assert client.put(f"/api/cases/{case_a}/clinical", json=body, headers=rad).status_code == 403
    assert client.get(f"/api/cases/{case_b}/clinical", headers=dm).status_code == 404
    assert client.put(f"/api/cases/{case_b}/clinical", json=body, headers=dm).status_code == 404
    assert client.get(f"/api/cases/{case_a}/clinical").status_code == 401
    # a bad value: 422 listing field + rule, nothing saved
    bad = dict(body, sex="Unknown", days_to_hospital_discharge=0)
    r = client.put(f"/api/cases/{case_a}/clinical", json=bad, headers=dm)
    assert r.status_code == 422
    assert {(d["field"], d["rule"]) for d in r.json()["details"]} == {
        ("sex", "enum"),
        ("days_to_hospital_discharge", "not_before"),
    }
    assert client.get(f"/api/cases/{case_a}/clinical", headers=dm).json()["sex"] == "Male"
    # list with clinical filters, facility-scoped
    r = client.get(
        "/api/cases", params={"covid19_positive": "Yes", "age_band": "60-79"}, headers=dm
    )
    assert r.json()["total"] == 1 and r.json()["items"][0]["id"] == case_a
    assert client.get("/api/cases", headers=bearer(node, "datamanager-b")).json()["total"] == 1
    assert client.get("/api/cases", params={"sex": "Robot"}, headers=dm).status_code == 422
    assert (
        client.get(
            "/api/cases", params={"sort": "age", "order": "desc"}, headers=bearer(node, "admin-a")
        ).json()["total"]
        == 3  # admins too: own facility only, as in DICOMweb
    )
    with node.db.session() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        assert actions.count("clinical.write") == 1 and "clinical.read" in actions
        assert "case.search" in actions
        write = s.scalar(select(AuditEvent).where(AuditEvent.action == "clinical.write"))
        assert write is not None and "Male" not in str(write.detail)
        assert s.scalar(select(ChangeEvent).where(ChangeEvent.kind == "clinical.update"))
        stored = s.scalar(select(ClinicalRecord).where(ClinicalRecord.patient_pk == case_a))
        assert stored is not None and stored.dictionary_version == load_dictionary().version


def test_openapi_schema_comes_from_dictionary(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    put = spec["paths"]["/api/cases/{case_id}/clinical"]["put"]
    props = put["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert set(props) == set(load_dictionary().names)
