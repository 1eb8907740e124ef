"""Scale: two `pair serve --role hub` processes on one real PostgreSQL database (as behind a
reverse proxy), with no state in a process that the other cannot see.

Three member sites push studies concurrently, each spreading its pushes over both processes;
one case pushed through process 1 is retracted through process 2. A subscriber streams the
feed (SSE) from process 2 while another polls process 1, and both hub processes run the
webhook worker for one subscription. Everyone sees the same events: numbered 1..N without a
gap, in commit order, each pushed study exactly once, and the webhook receiver gets each event
once, in order, although two workers share the queue."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from pair.accounts import service
from pair.audit.feedlog import FeedEvent
from pair.core.config import get_settings
from pair.core.node import open_node
from pair.db.throwaway import PostgresServer
from tests.conftest import LiveNode
from tests.sharing.test_feed_live import FAST, _hub_uid, _push, _until
from tests.sharing.test_feed_webhooks import Receiver

pytestmark = pytest.mark.integration
SITES = ("node_a", "node_b", "node_c")
PER_SITE = 4  # studies each site pushes, alternating between the two processes


@pytest.fixture
def two_hubs(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[list[LiveNode]]:
    url = postgres_server.create_database()
    env = {**FAST, "PAIR_ROLE": "hub", "PAIR_FEED_HEARTBEAT_S": "0.5"}
    first = LiveNode(tmp_path / "hub", url)  # one data dir: both processes share the storage
    first.env_overrides = env
    node = open_node(settings=get_settings(first.data_dir, database_url=url))
    with node.db.session() as s:
        for i, name in enumerate(SITES):
            fac = service.create_facility(s, f"Site {i}", f"SITE{i}")
            first.tokens[name] = service.create_token(
                s, service.create_user(s, fac, name, "site-node")
            )[1]
    node.close()
    second = LiveNode(tmp_path / "hub", url)
    second.env_overrides, second.tokens = env, first.tokens
    second.log_path = tmp_path / "hub2.log"
    hubs = [first, second]
    try:
        for hub in hubs:
            hub.start_timeout_s = 180.0
            hub.start()
        yield hubs
    finally:
        for hub in hubs:
            hub.stop()


def _poll_all(hub: LiveNode, who: str) -> list[dict]:
    events: list[dict] = []
    since = 0
    while True:
        r = httpx.get(
            hub.base_url + "/api/changes",
            params={"since": since, "limit": 5},  # small pages: paging must not skip either
            headers=hub.headers(who),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        page = r.json()["events"]
        if not page:
            return events
        events += page
        since = page[-1]["seq"]


def test_two_hub_processes_share_one_gap_free_feed(two_hubs: list[LiveNode]) -> None:
    first, second = two_hubs
    receiver = Receiver()
    receiver.status = 204
    r = httpx.post(
        first.base_url + "/api/feed/webhooks",
        json={"url": receiver.url},
        headers=first.headers("node_c"),
        timeout=30,
    )
    assert r.status_code == 201, r.text

    expected = len(SITES) * PER_SITE + 1  # every push, and one retraction
    streamed: list[dict] = []

    def stream() -> None:  # a subscriber on process 2, from the start of the feed
        with httpx.stream(
            "GET",
            second.base_url + "/api/changes/stream",
            params={"since": 0, "max_s": 300},
            headers=second.headers("node_b"),
            timeout=60,
        ) as s:
            for line in s.iter_lines():
                if line.startswith("data: "):
                    streamed.append(json.loads(line[6:]))
                    if len(streamed) >= expected:
                        return

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()

    def site(who: str) -> list[str]:
        return [_hub_uid(_push(two_hubs[i % 2], who, 1 + i % 2)) for i in range(PER_SITE)]

    with ThreadPoolExecutor(len(SITES)) as pool:
        pushed = dict(zip(SITES, pool.map(site, SITES), strict=True))
    retracted = pushed["node_a"][0]  # pushed through process 1, retracted through process 2
    r = httpx.post(
        second.base_url + f"/api/hub/studies/{retracted}/retract",
        headers=second.headers("node_a"),
        timeout=30,
    )
    assert r.status_code == 200, r.text

    reader.join(timeout=120)
    assert not reader.is_alive(), f"the stream saw {len(streamed)} of {expected} events"
    polled = _poll_all(first, "node_a")
    numbers = list(range(1, expected + 1))
    assert [e["seq"] for e in streamed] == numbers  # ordered, no gap, no duplicate
    assert streamed == polled  # both processes serve the same feed
    updated = [e["study_uid"] for e in polled if e["kind"] == "study.updated"]
    assert sorted(updated) == sorted(u for uids in pushed.values() for u in uids)
    assert len(set(updated)) == len(updated)
    by_site = {e["study_uid"]: e["facility"] for e in polled if e["kind"] == "study.updated"}
    for i, who in enumerate(SITES):
        assert {u for u, code in by_site.items() if code == f"SITE{i}"} == set(pushed[who])
    assert polled[-1]["kind"] == "study.retracted" and polled[-1]["study_uid"] == retracted
    node = open_node(settings=get_settings(first.data_dir, database_url=first.database_url))
    try:
        with node.db.session() as s:
            assert list(s.scalars(select(FeedEvent.seq).order_by(FeedEvent.seq))) == numbers
    finally:
        node.close()

    # two webhook workers (one per process) share the queue: each event once, in order
    _until(lambda: len(receiver.received) >= expected, "the webhook deliveries", timeout=90)
    delivered = [json.loads(body)["seq"] for _, body in receiver.received]
    assert delivered == numbers
    receiver.server.shutdown()
