"""Browsing the hub's cases (filters, paging, origin attribution) and the webhook delivery-log
pages, in-process on SQLite and PostgreSQL: a facility's admin sees its own subscriptions'
logs only (another facility's answers 404), a hub operator every facility's."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select, update

from pair.accounts import service
from pair.accounts.models import Facility
from pair.audit import feedlog
from pair.audit.service import Actor
from pair.core.errors import Invalid
from pair.repository.models import Study
from pair.sharing.feed import browse, webhooks
from tests.sharing.test_feed_api import Hub, hub  # noqa: F401  (the fixture)


def _studies(at: Hub, **params: object) -> dict:
    r = at.client.get("/api/hub/studies", params=params, headers=at.h("rad_b"))
    assert r.status_code == 200, r.text
    return r.json()


def test_filters_paging_and_origin(hub: Hub) -> None:  # noqa: F811
    a1, a2, b1 = (hub.stow(who, 1)[1] for who in ("dm_a", "dm_a", "dm_b"))
    with hub.node.db.session() as s:
        for uid, date, modality in ((a1, "20240105", "CT"), (a2, "20240301", "CR\\SR"),
                                    (b1, "20240220", "CT")):  # fmt: skip
            s.execute(
                update(Study)
                .where(Study.study_uid == uid)
                .values(study_date=date, modalities=modality)
            )
    everything = _studies(hub)
    assert everything["total"] == 3
    assert {(c["study_uid"], c["facility"]) for c in everything["studies"]} == {
        (a1, "HOSPA"), (a2, "HOSPA"), (b1, "HOSPB")}  # fmt: skip
    assert [c["study_uid"] for c in _studies(hub, origin="hospb")["studies"]] == [b1]
    assert {c["study_uid"] for c in _studies(hub, modality="CT")["studies"]} == {a1, b1}
    assert [c["study_uid"] for c in _studies(hub, modality="SR")["studies"]] == [a2]
    assert _studies(hub, modality="C")["total"] == 0  # a whole code, not a part of one
    dated = _studies(hub, date_from="2024-02-01", date_to="20240229")
    assert [(c["study_uid"], c["study_date"]) for c in dated["studies"]] == [(b1, "20240220")]
    first, second = _studies(hub, limit=2), _studies(hub, limit=2, offset=2)
    assert len(first["studies"]) == 2 and first["total"] == 3
    assert len(second["studies"]) == 1
    assert {c["study_uid"] for c in first["studies"] + second["studies"]} == {a1, a2, b1}
    for bad in ({"origin": "a b"}, {"modality": "C-T"}, {"date_from": "2024-13-01"},
                {"date_from": "2024-03-01", "date_to": "2024-01-01"}, {"limit": 0}):  # fmt: skip
        r = hub.client.get("/api/hub/studies", params=bad, headers=hub.h("rad_b"))
        assert r.status_code == 422, (bad, r.text)

    # the page at the hub: every member's cases with their origin, nothing to pull
    page = hub.client.get(
        "/hub/cases", params={"origin": "HOSPA"}, headers={**hub.h("rad_b"), "accept": "text/html"}
    )
    assert page.status_code == 200, page.text
    assert a1 in page.text and a2 in page.text and b1 not in page.text
    assert "Pull selected" not in page.text
    bad = hub.client.get("/hub/cases", params={"date_to": "yesterday"}, headers=hub.h("rad_b"))
    assert bad.status_code == 422
    with pytest.raises(Invalid, match="member site"):  # the hub holds them already
        browse.pull_selected(hub.node, Actor(None, "cli", None, "admin", "cli"), [a1])


def test_delivery_log_pages_are_confined_per_facility(hub: Hub) -> None:  # noqa: F811
    with hub.node.db.session() as s:
        fa, fb = (s.scalar(select(Facility).where(Facility.code == c)) for c in ("HOSPA", "HOSPB"))
        assert fa is not None and fb is not None
        for name, fac, role in (("adm_a", fa, "admin"), ("adm_b", fb, "admin"),
                                ("hubop", fa, "hub-operator")):  # fmt: skip
            user = service.create_user(s, fac, name, role, allow_operator=True)
            hub.tokens[name] = service.create_token(s, user)[1]
    ids = {}
    for who in ("node_a", "node_b"):  # nobody listens on port 9: every attempt fails
        r = hub.client.post(
            "/api/feed/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=hub.h(who)
        )
        assert r.status_code == 201, r.text
        ids[who] = r.json()["id"]
    with hub.node.db.session() as s:
        feedlog.record_change(s, None, "study.updated", study_uid="1.2.3.4")
        webhooks.fan_out(s)
    with httpx.Client(timeout=2) as client:
        webhooks.deliver_due(hub.node, client)

    html = {"accept": "text/html"}
    mine = hub.client.get("/hub/webhooks", headers={**hub.h("adm_a"), **html})
    assert mine.status_code == 200
    assert f'data-webhook="{ids["node_a"]}"' in mine.text
    assert f'data-webhook="{ids["node_b"]}"' not in mine.text
    log = hub.client.get(f"/hub/webhooks/{ids['node_a']}", headers={**hub.h("adm_a"), **html})
    assert log.status_code == 200
    assert 'class="state">pending' in log.text and "ConnectError" in log.text
    assert 'class="num">1</td>' in log.text  # one attempt so far, the next retry is shown
    assert 'class="nowrap small next">—' not in log.text
    other = hub.client.get(f"/hub/webhooks/{ids['node_b']}", headers=hub.h("adm_a"))
    assert other.status_code == 404  # as a missing one
    api = hub.client.get(f"/api/feed/webhooks/{ids['node_b']}/deliveries", headers=hub.h("adm_a"))
    assert api.status_code == 404
    assert hub.client.get("/hub/webhooks", headers=hub.h("rad_b")).status_code == 403

    everyone = hub.client.get("/hub/webhooks", headers={**hub.h("hubop"), **html})
    assert everyone.status_code == 200
    assert all(f'data-webhook="{i}"' in everyone.text for i in ids.values())
    assert "HOSPB" in everyone.text
    r = hub.client.get(f"/api/feed/webhooks/{ids['node_b']}/deliveries", headers=hub.h("hubop"))
    assert r.status_code == 200 and r.json()[0]["attempts"] == 1
    assert r.json()[0]["last_error"].startswith("ConnectError")
    # the hub operator reads logs but manages no facility's subscriptions
    assert hub.client.get("/api/feed/webhooks", headers=hub.h("hubop")).status_code == 403


@pytest.mark.parametrize("who", ["adm_b"])
def test_unknown_webhook_is_404(hub: Hub, who: str) -> None:  # noqa: F811
    with hub.node.db.session() as s:
        fb = s.scalar(select(Facility).where(Facility.code == "HOSPB"))
        hub.tokens[who] = service.create_token(s, service.create_user(s, fb, who, "admin"))[1]
    assert hub.client.get("/hub/webhooks/424242", headers=hub.h(who)).status_code == 404
    assert hub.client.get("/hub/webhooks/x", headers=hub.h(who)).status_code == 422
