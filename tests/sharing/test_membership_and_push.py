"""Hub membership over the API and portal (register → approve → credential → revoke → reissue,
audited) and the pusher against an in-process hub (the real client code over the app's
transport): reports and clinical data land in the hub's tables for the member's facility, and a
resend after a lost acknowledgement changes nothing. The hub runs on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from pair.accounts import service as accounts
from pair.audit.models import AuditEvent
from pair.audit.service import Actor
from pair.clinical.dictionary import load_dictionary
from pair.clinical.models import ClinicalRecord
from pair.clinical.service import store_clinical
from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.reporting.models import Report, ReportVersion
from pair.repository.ingest import Payload, ingest_batch
from pair.repository.models import Instance, Patient, Study
from pair.sharing import outbox
from pair.sharing.models import HubReceipt, OutboxItem, OutboxStatus
from pair.sharing.pusher import HubClient, push_once
from pair.web.app import create_app
from tests.factories import ct_instance, to_bytes


def _hub(tmp_path: Path, database_url: str) -> Node:
    return open_node(settings=get_settings(tmp_path / "hub", database_url=database_url, role="hub"))


def _operator_headers(node: Node) -> dict[str, str]:
    with node.db.session() as s:
        home = accounts.create_facility(s, "Consortium office", "HUB")
        op = accounts.create_user(s, home, "hubop", "hub-operator", allow_operator=True)
        return {"Authorization": f"Bearer {accounts.create_token(s, op)[1]}"}


def test_register_approve_revoke_reissue(tmp_path: Path, database_url: str) -> None:
    hub = _hub(tmp_path, database_url)
    try:
        c = TestClient(create_app(hub))
        op = _operator_headers(hub)
        reg = {"name": "Site A", "code": "sitea", "contact": "pacs@site-a.example"}
        r = c.post("/api/hub/registrations", json=reg)
        assert r.status_code == 201 and r.json()["status"] == "pending"
        assert c.post("/api/hub/registrations", json=reg).status_code == 409
        bad = c.post("/api/hub/registrations", json={"name": "X", "code": "no spaces"})
        assert bad.status_code == 422
        member_id = r.json()["id"]
        assert c.get("/api/hub/members").status_code == 401
        members = c.get("/api/hub/members", headers=op).json()
        assert [(m["code"], m["status"]) for m in members] == [("SITEA", "pending")]

        approved = c.post(f"/api/hub/members/{member_id}/approve", headers=op).json()
        token = {"Authorization": f"Bearer {approved['token']}"}
        me = c.get("/api/me", headers=token).json()
        assert me["role"] == "site-node" and approved["member"]["status"] == "approved"
        # the site-node account is the facility's only way in; a second approval is refused
        assert c.post(f"/api/hub/members/{member_id}/approve", headers=op).status_code == 409
        # a site node manages nothing at the hub
        assert c.get("/api/hub/members", headers=token).status_code == 403

        # a token the account minted for itself does not survive the revocation either
        minted = c.post("/api/tokens", json={"user": approved["user"]}, headers=token)
        assert minted.status_code == 201, minted.text
        own = {"Authorization": f"Bearer {minted.json()['token']}"}
        assert c.post(f"/api/hub/members/{member_id}/revoke", headers=op).status_code == 200
        assert c.get("/api/me", headers=token).status_code == 401
        assert c.get("/api/me", headers=own).status_code == 401
        again = c.post(f"/api/hub/members/{member_id}/reissue", headers=op).json()
        assert c.get("/api/me", headers=token).status_code == 401
        fresh = {"Authorization": f"Bearer {again['token']}"}
        assert c.get("/api/me", headers=fresh).status_code == 200
        page = c.get("/hub/members", headers=op)
        assert page.status_code == 200 and "SITEA" in page.text
        with hub.db.session() as s:
            actions = set(s.scalars(select(AuditEvent.action)))
        assert {
            "hub.member.register",
            "hub.member.approve",
            "hub.member.revoke",
            "hub.member.reissue",
        } <= actions
    finally:
        hub.close()


def test_a_site_is_no_hub(tmp_path: Path) -> None:
    site = open_node(tmp_path / "site")
    try:
        c = TestClient(create_app(site))
        r = c.post("/api/hub/registrations", json={"name": "Site A", "code": "SITEA"})
        assert r.status_code == 404
    finally:
        site.close()


def test_push_reports_and_clinical_once(tmp_path: Path, database_url: str) -> None:
    hub = _hub(tmp_path, database_url)
    op = _operator_headers(hub)
    hub_app = create_app(hub)
    c = TestClient(hub_app)
    member = c.post("/api/hub/registrations", json={"name": "Site A", "code": "SITEA"}).json()
    token = c.post(f"/api/hub/members/{member['id']}/approve", headers=op).json()["token"]
    settings = get_settings(tmp_path / "site", hub_url="http://127.0.0.1:9", hub_token=token)
    site = open_node(settings=settings)
    hub_client = HubClient(settings, transport=TestClient(hub_app)._transport)
    try:
        with site.db.session() as s:
            fa = accounts.create_facility(s, "Hospital A", "HOSPA").id
        study, series = generate_uid(), generate_uid()
        payloads = [
            Payload(to_bytes(ct_instance(study_uid=study, series_uid=series, index=i)), str(i))
            for i in (1, 2)
        ]
        results = ingest_batch(site, fa, payloads, "t", Actor.system("t", facility_id=fa))
        with site.db.session() as s:
            stored = s.scalar(select(Study).where(Study.study_uid == results[0].study_uid))
            assert stored is not None
            report = Report(
                facility_id=fa,
                study_uid=stored.study_uid,
                module_id="corads",
                module_version="1",
                status="final",
            )
            s.add(report)
            s.flush()
            s.add(
                ReportVersion(
                    report_id=report.id,
                    version=1,
                    status="final",
                    module_version="1",
                    inputs={"category": "CO-RADS 5"},
                    text="Typical for COVID-19.",
                )
            )
            data, errors = load_dictionary().validate({"covid19_positive": "Yes"})
            assert not errors
            patient = s.get(Patient, stored.patient_pk)
            assert patient is not None
            store_clinical(s, Actor.system(), patient, data)
            outbox.set_policy(s, Actor.system(facility_id=fa), "reported", fa)
        outcome = push_once(site, hub_client)
        assert outcome == {"sent": 4, "failed": 0, "retry": 0}  # 2 instances, clinical, report

        # the acknowledgements were lost: the same items go again, the hub changes nothing
        with site.db.session() as s:
            for item in s.scalars(select(OutboxItem)):
                item.status = OutboxStatus.QUEUED
        assert push_once(site, hub_client)["sent"] == 4
        with hub.db.session() as s:
            assert s.scalar(select(func.count()).select_from(Instance)) == 2
            assert s.scalar(select(func.count()).select_from(ReportVersion)) == 1
            assert s.scalar(select(func.count()).select_from(ClinicalRecord)) == 1
            assert s.scalar(select(func.count()).select_from(HubReceipt)) == 2
            hub_report = s.scalars(select(Report)).one()
            assert hub_report.study_uid == stored.study_uid  # the site's UIDs, kept
            version = s.scalars(select(ReportVersion)).one()
            assert version.text == "Typical for COVID-19." and version.status == "final"
            record = s.scalars(select(ClinicalRecord)).one()
            assert record.data["covid19_positive"] == "Yes"
            assert record.facility_id == hub_report.facility_id
    finally:
        hub_client.close()
        site.close()
        hub.close()


def test_share_this_case_from_the_portal_and_api(tmp_path: Path) -> None:
    site = open_node(tmp_path / "site")
    try:
        with site.db.session() as s:
            fa = accounts.create_facility(s, "Hospital A", "HOSPA")
            tokens = {
                role: accounts.create_token(s, accounts.create_user(s, fa, f"u-{role}", role))[1]
                for role in ("admin", "data-manager", "researcher")
            }
            fa_id = fa.id
        study, series = generate_uid(), generate_uid()
        payload = Payload(to_bytes(ct_instance(study_uid=study, series_uid=series)), "1")
        (result,) = ingest_batch(site, fa_id, [payload], "t", Actor.system("t", facility_id=fa_id))
        with site.db.session() as s:
            case = s.scalar(select(Study.patient_pk).where(Study.study_uid == result.study_uid))
        c = TestClient(create_app(site))
        auth = {role: {"Authorization": f"Bearer {t}"} for role, t in tokens.items()}
        assert "Share this case" in c.get(f"/cases/{case}", headers=auth["data-manager"]).text
        assert "Share this case" not in c.get(f"/cases/{case}", headers=auth["researcher"]).text
        assert c.post(f"/api/cases/{case}/share", headers=auth["researcher"]).status_code == 403
        shared = c.post(f"/api/cases/{case}/share", headers=auth["data-manager"])
        assert shared.status_code == 200 and shared.json()["queued"]["instance"] == 1
        status = c.get("/api/sharing", headers=auth["admin"]).json()
        assert status["policy"] == "none" and status["counts"]["instance"] == {"queued": 1}
        page = c.get("/sharing", headers=auth["admin"])
        assert page.status_code == 200 and "Save policy" in page.text
        assert "Save policy" not in c.get("/sharing", headers=auth["data-manager"]).text
        assert c.get("/api/sharing", headers=auth["researcher"]).status_code == 403
    finally:
        site.close()
