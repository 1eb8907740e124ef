"""Hub → facilities with real processes on loopback: two hub processes on one PostgreSQL
database (pushes reach one, the feed is read from the other), a site following by polling
(``pair serve`` with PAIR_FEED_FOLLOW=1) and a site woken by signed webhooks; both pull new
cases, skip their own, and drop a case its origin retracts; another facility cannot retract;
the hub's quota refuses a push; the SSE stream resumes after Last-Event-ID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from pair.accounts import service
from pair.accounts.models import Facility
from pair.core.config import get_settings
from pair.core.node import open_node
from pair.db.throwaway import PostgresServer
from pair.repository.models import Study
from pair.sharing.feed.models import FeedOrigin
from tests.conftest import LiveNode
from tests.sharing.test_feed_api import CTYPE, stow_body

pytestmark = pytest.mark.integration
SECRET = "site-two-webhook-secret-Ward7-Lumen-Quartz"
FAST = {
    "PAIR_FEED_POLL_S": "0.2",
    "PAIR_FEED_WEBHOOK_BACKOFF_S": "0.2",
    "PAIR_INGEST_WORKERS": "0",
    "PAIR_INFERENCE_SPARE_WORKER": "0",
}


def _site(root: Path, name: str, env: dict[str, str]) -> LiveNode:
    node = LiveNode(root / name, f"sqlite:///{root / name}.db")
    node.env_overrides = {**FAST, "PAIR_ROLE": "site", "PAIR_FEED_FACILITY": "HOSPA", **env}
    return node


@pytest.fixture
def world(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[dict[str, LiveNode]]:
    url = postgres_server.create_database()
    hub_env = {**FAST, "PAIR_ROLE": "hub", "PAIR_HUB_QUOTA_MAX_INSTANCES": "6"}
    hub = LiveNode(tmp_path / "hub", url)
    hub.env_overrides = hub_env
    hub.provision()
    node = open_node(settings=get_settings(hub.data_dir, database_url=url))
    with node.db.session() as s:
        fb = s.scalar(select(Facility).where(Facility.code == "HOSPB"))
        assert fb is not None
        fc = service.create_facility(s, "Hospital C", "HOSPC")
        for name, fac in (("node_b", fb), ("node_c", fc)):
            user = service.create_user(s, fac, name, "site-node")
            hub.tokens[name] = service.create_token(s, user)[1]
    node.close()
    hub2 = LiveNode(tmp_path / "hub", url)  # a second server process of the same hub
    hub2.env_overrides, hub2.tokens = hub_env, hub.tokens
    hub2.log_path = tmp_path / "hub2.log"
    polling = _site(
        tmp_path,
        "polling",
        {
            "PAIR_HUB_URL": hub2.base_url,
            "PAIR_HUB_TOKEN": hub.tokens["node_b"],
            "PAIR_FEED_FOLLOW": "1",
        },
    )
    hooked = _site(
        tmp_path,
        "hooked",
        {
            "PAIR_HUB_URL": hub.base_url,
            "PAIR_HUB_TOKEN": hub.tokens["node_c"],
            "PAIR_FEED_WEBHOOK_SECRET": SECRET,
        },
    )
    nodes = {"hub": hub, "hub2": hub2, "polling": polling, "hooked": hooked}
    for n in nodes.values():
        n.start_timeout_s = 240.0  # four processes start one after another on a busy machine
    try:
        polling.provision()
        hooked.provision()
        for n in nodes.values():
            n.start()
        yield nodes
    finally:
        for n in nodes.values():
            n.stop()


def _push(hub: LiveNode, who: str, n: int) -> httpx.Response:
    return httpx.post(
        hub.base_url + "/dicomweb/studies",
        content=stow_body(generate_uid(), n),
        headers={**hub.headers(who), "Content-Type": CTYPE},
        timeout=60,
    )


def _hub_uid(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return str(r.json()["00081190"]["Value"][0]).rsplit("/studies/", 1)[1]


def _origins(site: LiveNode) -> dict[str, tuple[str, bool]]:
    """hub study UID → (origin facility, local copy shareable) at a site."""
    node = open_node(settings=get_settings(site.data_dir, database_url=site.database_url))
    try:
        with node.db.session() as s:
            rows = s.execute(
                select(FeedOrigin.hub_study_uid, FeedOrigin.origin_facility, Study.shareable).join(
                    Study, Study.study_uid == FeedOrigin.local_study_uid
                )
            ).all()
    finally:
        node.close()
    return {uid: (origin, shareable) for uid, origin, shareable in rows}


def _local_studies(site: LiveNode) -> int:
    r = httpx.get(site.base_url + "/dicomweb/studies", headers=site.headers("dm_a"), timeout=30)
    assert r.status_code in (200, 204), r.text
    return len(r.json()) if r.status_code == 200 and r.content else 0


def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_subscribers_pull_and_drop_retracted_cases(world: dict[str, LiveNode]) -> None:
    hub, hub2, polling, hooked = (world[k] for k in ("hub", "hub2", "polling", "hooked"))
    r = httpx.post(
        hub.base_url + "/api/feed/webhooks",
        json={"url": hooked.base_url + "/api/feed/webhook", "secret": SECRET},
        headers=hub.headers("node_c"),
    )
    assert r.status_code == 201, r.text
    hook_id = r.json()["id"]

    case_a = _hub_uid(_push(hub, "dm_a", 2))  # pushed by facility A to hub process 1
    _until(lambda: case_a in _origins(polling), "the polling site to pull A's case")
    _until(lambda: case_a in _origins(hooked), "the webhook site to pull A's case")
    assert _origins(polling)[case_a] == ("HOSPA", False)  # origin kept; never shared back
    assert _origins(hooked)[case_a] == ("HOSPA", False)
    assert _local_studies(polling) == 1 and _local_studies(hooked) == 1

    # facility B's own case reaches the webhook site; the polling site (B's node) skips it
    case_b = _hub_uid(_push(hub, "admin_b", 1))
    _until(lambda: case_b in _origins(hooked), "the webhook site to pull B's case")
    time.sleep(1.0)
    assert case_b not in _origins(polling)

    # only the origin facility retracts: B's site node gets 404, A's admin succeeds
    retract = f"/api/hub/studies/{case_a}/retract"
    assert httpx.post(hub2.base_url + retract, headers=hub.headers("node_b")).status_code == 404
    r = httpx.post(hub2.base_url + retract, headers=hub.headers("admin_a"))
    assert r.status_code == 200, r.text
    _until(lambda: case_a not in _origins(polling), "the polling site to drop the case")
    _until(lambda: case_a not in _origins(hooked), "the webhook site to drop the case")
    assert _local_studies(polling) == 0 and _local_studies(hooked) == 1  # B's case stays

    log = httpx.get(
        hub.base_url + f"/api/feed/webhooks/{hook_id}/deliveries", headers=hub.headers("node_c")
    ).json()
    assert [d["state"] for d in log] == ["delivered"] * 3 and log[0]["attempts"] == 1
    assert (
        httpx.get(
            hub.base_url + f"/api/feed/webhooks/{hook_id}/deliveries",
            headers=hub.headers("node_b"),
        ).status_code
        == 404
    )

    # SSE from the other hub process, resumed after the first event
    def stream(last_id: str) -> list[str]:
        with httpx.stream(
            "GET",
            hub2.base_url + "/api/changes/stream",
            params={"max_s": 1},
            headers={**hub.headers("node_c"), "Last-Event-ID": last_id},
            timeout=30,
        ) as s:
            return [line[4:] for line in s.iter_lines() if line.startswith("id: ")]

    assert stream("0") == ["1", "2", "3"]
    assert stream("1") == ["2", "3"]

    # the quota (6 instances per facility): 1 stored for B, 6 more refused
    r = _push(hub, "admin_b", 6)
    assert r.status_code == 413 and "quota" in r.text

    # the CLI follows from the stored cursor: nothing new for the webhook site
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pair",
            "feed",
            "follow",
            "--once",
            "--data-dir",
            str(hooked.data_dir),
        ],
        env={**os.environ, **hooked.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "cursor at 3" in out.stdout
