"""The radiologist's worklist: four queues, counts on the home page, facility scope, roles."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from pair.accounts import service as accounts
from pair.accounts.models import Facility, User
from pair.core.node import Node
from pair.reporting import worklist
from pair.web.app import create_app
from tests.portal_data import PASSWORD, build_world
from tests.reporting.conftest import add_study
from tests.reporting.test_reports_api import TYPICAL_INPUTS
from tests.web.test_pages import HTML, sign_in


def _ids(w: Any, name: str) -> tuple[int, int]:
    with w.node.db.session() as s:
        user = s.scalar(select(User).where(User.name == name))
        assert user is not None
        return user.facility_id, user.id


def _queue(w: Any, name: str, queue: str) -> list[str]:
    with w.node.db.session() as s:
        return [i.study_uid for i in worklist.items(s, *_ids(w, name), queue)]


def test_queues_follow_the_report_lifecycle(world: Any) -> None:
    w = world
    sr_only = "1.2.826.0.1.3680043.8.498.300"
    add_study(w.node, w.facility["a"], sr_only, "GH-0003", images=0)
    with w.node.db.session() as s:
        from pair.repository.models import Study

        study = s.scalar(select(Study).where(Study.study_uid == sr_only))
        assert study is not None
        study.modalities = "SR"
    other = "1.2.826.0.1.3680043.8.498.400"
    add_study(w.node, w.facility["b"], other, "OC-0001", images=1)

    # nothing reported yet: both image studies of facility A wait, not the SR-only one, not B's
    assert set(_queue(w, "rad1", "unreported")) == {w.study_uid, w.empty_study_uid}
    assert _queue(w, "rad2", "unreported") == [other]
    assert _queue(w, "rad1", "mine") == []

    created = w.client.post(
        "/api/reports",
        json={"study_uid": w.study_uid, "module": "rsna-ct-covid", "inputs": {"ggo": "present"}},
        headers=w.h("rad1"),
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert _queue(w, "rad1", "mine") == [w.study_uid]
    assert _queue(w, "adm1", "mine") == []  # not the admin's draft
    assert _queue(w, "rad1", "to_sign") == []  # required findings still missing

    revision = w.client.get(f"/api/reports/{rid}", headers=w.h("rad1")).json()["revision"]
    put = w.client.put(
        f"/api/reports/{rid}/inputs",
        json={"inputs": TYPICAL_INPUTS, "expected_revision": revision},
        headers=w.h("rad1"),
    )
    assert put.status_code == 200, put.text
    assert _queue(w, "rad1", "to_sign") == [w.study_uid]
    assert _queue(w, "adm1", "to_sign") == [w.study_uid]  # complete, whoever drafted it
    assert _queue(w, "rad2", "to_sign") == []  # another facility's draft is not listed

    assert w.client.post(f"/api/reports/{rid}/sign", headers=w.h("rad1")).status_code == 200
    assert _queue(w, "rad1", "unreported") == [w.empty_study_uid]
    assert _queue(w, "rad1", "to_sign") == [] and _queue(w, "rad1", "mine") == []

    amended = w.client.post(
        f"/api/reports/{rid}/amend", json={"reason": "History received"}, headers=w.h("rad1")
    )
    assert amended.status_code == 200, amended.text
    assert _queue(w, "rad1", "mine") == [w.study_uid]  # the amendment is a draft again
    assert _queue(w, "rad1", "unreported") == [w.empty_study_uid]  # version 1 stays signed
    assert w.client.post(f"/api/reports/{rid}/sign", headers=w.h("rad1")).status_code == 200
    assert _queue(w, "rad1", "amended") == [w.study_uid]
    with w.node.db.session() as s:
        assert worklist.counts(s, *_ids(w, "rad1")) == {
            "unreported": 1,
            "mine": 0,
            "to_sign": 0,
            "amended": 1,
        }


def test_worklist_page_home_counts_and_roles(sqlite_node: Node) -> None:
    with sqlite_node.db.session() as s:
        world = build_world(s)
        b = s.get(Facility, world.facilities["B"])
        accounts.create_user(s, b, "radiologist-b", "radiologist", PASSWORD)
        a = s.get(Facility, world.facilities["A"])
        accounts.create_user(s, a, "researcher-a", "researcher", PASSWORD)
    c = TestClient(create_app(sqlite_node))
    sign_in(c, "radiologist-a")
    home = c.get("/", headers=HTML).text
    assert 'href="/worklist?queue=unreported"' in home and "studies to report" in home
    page = c.get("/worklist", headers=HTML)
    assert page.status_code == 200 and 'id="worklist-table"' in page.text
    assert 'href="/worklist"' in page.text  # in the navigation
    for queue in worklist.QUEUES:
        assert c.get(f"/worklist?queue={queue}", headers=HTML).status_code == 200
    bad = c.get("/worklist?queue=everything", headers=HTML)
    assert bad.status_code == 422 and "Unknown worklist" in bad.text
    with sqlite_node.db.session() as s:
        user = s.scalar(select(User).where(User.name == "radiologist-a"))
        assert user is not None
        mine = worklist.items(s, user.facility_id, user.id, "unreported")
    assert mine and all(f">{i.pseudonym}</a>" in page.text for i in mine[:5])
    # facility B's radiologist sees none of A's cases
    c2 = TestClient(create_app(sqlite_node))
    sign_in(c2, "radiologist-b")
    other = c2.get("/worklist", headers=HTML).text
    assert not any(i.pseudonym in other for i in mine)
    # roles that do not report get no worklist and no counts
    c3 = TestClient(create_app(sqlite_node))
    sign_in(c3, "researcher-a")
    assert c3.get("/worklist", headers=HTML).status_code == 403
    assert "studies to report" not in c3.get("/", headers=HTML).text
