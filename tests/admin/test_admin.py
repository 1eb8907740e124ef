"""Admin services: user activation, de-identification profile, quarantine reject, audit search."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.admin import service
from pair.audit.models import AuditEvent
from pair.audit.service import Actor, record
from pair.core.errors import Conflict, Invalid, NotFound, Unauthorized
from pair.core.node import Node
from pair.repository import ingest, quarantine
from pair.repository import service as repository_service
from pair.repository.models import QuarantineItem
from tests.portal_data import PASSWORD, build_world


def admin_actor(node: Node) -> Actor:
    with node.db.session() as s:
        return accounts.actor_for(accounts.get_user(s, "admin-a"), "test")


def test_deactivate_user_blocks_sign_in(node: Node) -> None:
    with node.db.session() as s:
        build_world(s)
    actor = admin_actor(node)
    with node.db.session() as s:
        user = accounts.get_user(s, "radiologist-a")
        service.set_user_active(s, user.id, False, actor)
        with pytest.raises(Conflict):
            service.set_user_active(s, actor.user_id or 0, False, actor)
    with node.db.session() as s, pytest.raises(Unauthorized):
        accounts.authenticate_password(s, "radiologist-a", PASSWORD)
    with node.db.session() as s:
        service.set_user_active(s, accounts.get_user(s, "radiologist-a").id, True, actor)
        assert accounts.authenticate_password(s, "radiologist-a", PASSWORD).active


def test_deid_profile_is_validated(node: Node) -> None:
    with node.db.session() as s:
        world = build_world(s)
    actor, fid = admin_actor(node), world.facilities["A"]
    with node.db.session() as s:
        for bad in ("options: [unclosed", "- just\n- a list\n"):
            with pytest.raises(Invalid):
                service.set_deid_profile(s, fid, bad, actor)
    with node.db.session() as s:
        f = service.set_deid_profile(s, fid, "options:\r\n  retain_safe_private: true\r\n", actor)
        assert f.deid_profile == "options:\n  retain_safe_private: true\n"
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "deid.profile.update"))


def test_quarantine_review_and_reject_are_audited_and_scoped(node: Node) -> None:
    """An item quarantined before 0005 (no original kept, unreadable file) can still be
    reviewed (reasons without values) and rejected; re-running needs the original."""
    with node.db.session() as s:
        world = build_world(s)
    actor = admin_actor(node)
    qstore = ingest.quarantine_store(node)
    _, rel = qstore.write(b"DICM quarantined bytes")
    with node.db.session() as s:
        item = QuarantineItem(
            facility_id=world.facilities["A"],
            sop_instance_uid="2.25.9",
            storage_path=rel,
            modality="CT",
            reasons=[{"reason": "residual PatientName in (0008,1030)"}],
        )
        other = QuarantineItem(
            facility_id=world.facilities["B"], sop_instance_uid="2.25.8", storage_path="elsewhere"
        )
        s.add_all([item, other])
        s.flush()
        item_id, other_id = item.id, other.id
    with node.db.session() as s:
        total, items = repository_service.list_quarantine(s, world.facilities["A"], "pending")
        assert total == 1 and items[0].id == item_id
        review = quarantine.review(node, s, item_id, actor)
        assert review["original_kept"] is False and review["elements"][0]["masked_value"] == ""
        with pytest.raises(NotFound):  # another facility's item
            quarantine.review(node, s, other_id, actor)
        with pytest.raises(Invalid):
            repository_service.list_quarantine(s, world.facilities["A"], "lost")
    with pytest.raises(Conflict):
        quarantine.rerun_and_store(node, item_id, actor)
    quarantine.reject(node, item_id, actor, "burned-in name")
    assert not qstore.path(rel).exists()
    with node.db.session() as s:
        done = s.get(QuarantineItem, item_id)
        assert done is not None and done.status == "rejected" and done.reviewed_by == "admin-a"
        assert done.review_note == "burned-in name"
        actions = set(s.scalars(select(AuditEvent.action)))
        assert {"quarantine.review", "quarantine.reject"} <= actions
        assert repository_service.list_quarantine(s, world.facilities["A"], "rejected")[0] == 1
    with pytest.raises(NotFound):
        quarantine.reject(node, item_id, actor)
    with pytest.raises(NotFound):
        quarantine.remove_and_store(node, other_id, actor)


def test_audit_search_filters_and_paging(node: Node) -> None:
    with node.db.session() as s:
        build_world(s)
    actor = admin_actor(node)
    with node.db.session() as s:
        for i in range(7):
            record(s, actor, "clinical.read", "case", str(i))
        old = record(s, actor, "case.search", "case")
        old.at = datetime.now(UTC) - timedelta(days=30)
    with node.db.session() as s:
        total, rows = service.search_audit(s, service.AuditQuery(action="clinical.", limit=5))
        assert total == 7 and len(rows) == 5 and rows[0].object_id == "6"
        total, rows = service.search_audit(
            s, service.AuditQuery(action="clinical.", limit=5, offset=5)
        )
        assert [r.object_id for r in rows] == ["1", "0"]
        assert (
            service.search_audit(s, service.AuditQuery(object_type="case", object_id="3"))[0] == 1
        )
        today = datetime.now(UTC).date()
        q = service.AuditQuery(user="admin-a", date_to=today - timedelta(days=10))
        assert service.search_audit(s, q)[0] == 1
        q = service.AuditQuery(user="admin-a", date_from=today, object_type="case")
        assert service.search_audit(s, q)[0] == 7
        assert service.search_audit(s, service.AuditQuery(date_from=date(2100, 1, 1)))[0] == 0
        facets = service.audit_facets(s)
        assert "admin-a" in facets["users"] and "clinical.read" in facets["actions"]
