"""The hub's change feed in-process: events from ingest and retraction, validation, who reads
and who retracts, quotas, the SSE stream with Last-Event-ID, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from pair.accounts import service
from pair.audit.models import AuditEvent
from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.repository.models import Study
from pair.sharing.feed.studies import set_default_quota
from pair.web.app import create_app
from tests.factories import ct_instance, to_bytes

BOUNDARY = "feedtest"
CTYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
ROLES = {
    "admin_a": ("A", "admin"),
    "dm_a": ("A", "data-manager"),
    "node_a": ("A", "site-node"),
    "rad_b": ("B", "radiologist"),
    "dm_b": ("B", "data-manager"),
    "node_b": ("B", "site-node"),
}


def stow_body(study_uid: str, n: int) -> bytes:
    series = generate_uid()
    parts = [
        to_bytes(ct_instance(study_uid=study_uid, series_uid=series, index=i, size=8))
        for i in range(1, n + 1)
    ]
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()


class Hub:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.client = TestClient(create_app(node))
        with node.db.session() as s:
            fac = {
                "A": service.create_facility(s, "Hospital A", "HOSPA"),
                "B": service.create_facility(s, "Hospital B", "HOSPB"),
            }
            self.tokens = {
                name: service.create_token(s, service.create_user(s, fac[f], name, role))[1]
                for name, (f, role) in ROLES.items()
            }

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def stow(self, who: str, n: int = 2) -> tuple[int, str]:
        """Push a new study; returns the status and the study UID it has at the hub."""
        r = self.client.post(
            "/dicomweb/studies",
            content=stow_body(generate_uid(), n),
            headers={**self.h(who), "Content-Type": CTYPE},
        )
        if r.status_code != 200:
            return r.status_code, r.text
        url = r.json()["00081190"]["Value"][0]
        return 200, url.rsplit("/studies/", 1)[1]

    def changes(self, who: str, **params: object) -> dict:
        r = self.client.get("/api/changes", params=params, headers=self.h(who))
        assert r.status_code == 200, r.text
        return r.json()


def _node(tmp_path: Path, database_url: str, role: str, **kw: object) -> Iterator[Node]:
    settings = get_settings(tmp_path / role, database_url=database_url, role=role, **kw)
    n = open_node(settings=settings)
    yield n
    n.close()


@pytest.fixture
def hub(tmp_path: Path, database_url: str) -> Iterator[Hub]:
    yield from (
        Hub(n) for n in _node(tmp_path, database_url, "hub", feed_heartbeat_s=0.2, feed_poll_s=0.05)
    )


def test_ingest_records_one_event_per_study_readable_by_every_member(hub: Hub) -> None:
    status, uid = hub.stow("dm_a", 3)
    assert status == 200, uid
    page = hub.changes("rad_b")  # another member facility reads the hub's feed
    assert page["facility"] == "HOSPB"
    [event] = page["events"]
    assert event["kind"] == "study.updated" and event["study_uid"] == uid
    assert event["facility"] == "HOSPA" and event["payload"] == {"instances_added": 3}
    # a later batch: a new event with a larger number
    status, uid2 = hub.stow("dm_a", 1)
    assert status == 200
    later = hub.changes("node_b", since=event["seq"])["events"]
    assert [e["study_uid"] for e in later] == [uid2] and later[0]["seq"] > event["seq"]
    assert hub.changes("node_b", since=later[0]["seq"])["events"] == []
    assert [e["seq"] for e in hub.changes("node_b", limit=1)["events"]] == [event["seq"]]
    # the feed names no patient: only UIDs, the facility code and counts
    assert "Doe" not in str(page) and "JOHN" not in str(page).upper()


@pytest.mark.parametrize(
    "params",
    [{"since": -1}, {"since": "x"}, {"limit": 0}, {"limit": 1001}, {"since": "1.5"}],
)
def test_bad_feed_parameters_are_422(hub: Hub, params: dict[str, object]) -> None:
    r = hub.client.get("/api/changes", params=params, headers=hub.h("rad_b"))
    assert r.status_code == 422, r.text


def test_only_the_origin_facility_retracts(hub: Hub) -> None:
    status, uid = hub.stow("dm_a", 2)
    assert status == 200
    path = f"/api/hub/studies/{uid}/retract"
    for who in ("node_b", "rad_b"):  # another facility: as if the case did not exist
        r = hub.client.post(path, headers=hub.h(who))
        assert r.status_code in (403, 404), r.text
    assert hub.client.post(path, headers=hub.h("node_b")).status_code == 404
    assert hub.client.post(path, headers=hub.h("dm_a")).status_code == 403  # role, not origin
    r = hub.client.post(path, headers=hub.h("node_a"))
    assert r.status_code == 200 and r.json()["instances_removed"] == 2
    assert hub.client.get(f"/api/hub/studies/{uid}", headers=hub.h("rad_b")).status_code == 404
    assert hub.client.post(path, headers=hub.h("node_a")).status_code == 404
    kinds = [(e["kind"], e["study_uid"]) for e in hub.changes("rad_b")["events"]]
    assert kinds == [("study.updated", uid), ("study.retracted", uid)]
    with hub.node.db.session() as s:
        assert s.scalar(select(Study).where(Study.study_uid == uid)) is None
        outcomes = s.scalars(
            select(AuditEvent.outcome).where(AuditEvent.action == "feed.retract")
        ).all()
    assert sorted(outcomes) == ["denied"] * 5 + ["success"]


def test_any_member_reads_a_hub_case_and_the_operator_none(hub: Hub) -> None:
    status, uid = hub.stow("dm_a", 2)
    assert status == 200
    r = hub.client.get(f"/api/hub/studies/{uid}", headers=hub.h("rad_b"))
    assert r.status_code == 200
    assert r.headers["x-pair-origin-facility"] == "HOSPA"
    assert r.content.count(b"Content-Type: application/dicom") == 2
    listed = hub.client.get("/api/hub/studies", headers=hub.h("node_b")).json()["studies"]
    assert [(c["study_uid"], c["facility"], c["instances"]) for c in listed] == [(uid, "HOSPA", 2)]


def test_over_quota_is_refused_and_nothing_is_stored(hub: Hub) -> None:
    with hub.node.db.session() as s:
        set_default_quota(s, 3, 0)
    assert hub.stow("dm_a", 2)[0] == 200
    status, text = hub.stow("dm_a", 2)
    assert status == 413 and "quota" in text and "PAIR_HUB_QUOTA_MAX_INSTANCES" in text
    assert hub.stow("dm_a", 1)[0] == 200  # exactly at the quota
    assert hub.stow("dm_b", 2)[0] == 200  # the quota is per facility
    with hub.node.db.session() as s:
        assert s.scalar(select(func.sum(Study.num_instances)).where(Study.facility_id == 1)) == 3
    q = hub.client.get("/api/hub/quota", headers=hub.h("dm_a")).json()
    assert q["instances"] == 3 and q["max_instances"] == 3
    assert len(hub.changes("rad_b")["events"]) == 3  # the refused batch recorded nothing


def _sse_ids(text: str) -> list[int]:
    return [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]


def test_sse_stream_resumes_after_last_event_id(hub: Hub) -> None:
    uids = [hub.stow("dm_a", 1)[1] for _ in range(3)]
    seqs = [e["seq"] for e in hub.changes("rad_b")["events"]]
    r = hub.client.get("/api/changes/stream", params={"max_s": 0.6}, headers=hub.h("rad_b"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert _sse_ids(r.text) == seqs
    assert f'"study_uid":"{uids[0]}"' in r.text and "event: study.updated" in r.text
    assert ": heartbeat" in r.text  # PAIR_FEED_HEARTBEAT_S=0.2 and nothing new for 0.6 s
    resumed = hub.client.get(
        "/api/changes/stream",
        params={"max_s": 0.3},
        headers={**hub.h("rad_b"), "Last-Event-ID": str(seqs[0])},
    )
    assert _sse_ids(resumed.text) == seqs[1:]
    bad = hub.client.get("/api/changes/stream", headers={**hub.h("rad_b"), "Last-Event-ID": "abc"})
    assert bad.status_code == 422


def test_at_a_site_a_user_reads_only_its_own_facility(tmp_path: Path, database_url: str) -> None:
    for node in _node(tmp_path, database_url, "site"):
        site = Hub(node)
        assert site.stow("dm_a", 1)[0] == 200
        assert len(site.changes("admin_a")["events"]) == 1
        assert site.changes("rad_b")["events"] == []
        r = site.client.get("/api/hub/studies", headers=site.h("rad_b"))
        assert r.status_code == 404  # not a hub
