"""Webhook deliveries from the hub's worker to a real HTTP receiver on loopback: signed
(HMAC-SHA256 over "<timestamp>.<body>"), in order, retried with backoff while the receiver
fails, given up after PAIR_FEED_WEBHOOK_ATTEMPTS; all state in the database."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from pair.accounts import service
from pair.audit import feedlog
from pair.audit.service import Actor
from pair.core.config import get_settings
from pair.core.errors import Invalid
from pair.core.node import Node, open_node
from pair.db.throwaway import free_port
from pair.sharing.feed import webhooks
from pair.sharing.feed.models import FeedDelivery

SECRET = "receiver-secret-Ward7-Lumen-Quartz-0123"


class Receiver:
    """Records what it is sent; answers ``status`` (500 to play a failing subscriber)."""

    def __init__(self) -> None:
        self.status = 500
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((dict(self.headers), body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hub(tmp_path: Path, database_url: str) -> Iterator[Node]:
    settings = get_settings(
        tmp_path / "hub",
        database_url=database_url,
        role="hub",
        feed_webhook_attempts=3,
        feed_webhook_backoff_s=0.01,
    )
    node = open_node(settings=settings)
    yield node
    node.close()


def _states(node: Node) -> list[tuple[int, str, int]]:
    with node.db.session() as s:
        rows = s.scalars(select(FeedDelivery).order_by(FeedDelivery.seq)).all()
        return [(d.seq, d.state, d.attempts) for d in rows]


def _round(node: Node) -> int:
    with node.db.session() as s:
        webhooks.fan_out(s)
    with httpx.Client(timeout=5) as client:
        return webhooks.deliver_due(node, client)


def test_signed_ordered_retried_then_given_up(hub: Node) -> None:
    receiver = Receiver()
    with hub.db.session() as s:
        fac = service.create_facility(s, "Hospital A", "HOSPA")
        feedlog.record_change(s, fac.id, "study.updated", study_uid="1.2.3.before")
        actor = Actor(1, "node_a", fac.id, "site-node")
        with pytest.raises(Invalid):
            webhooks.create(s, actor, "ftp://example/hook")
        with pytest.raises(Invalid):
            webhooks.create(s, actor, receiver.url, "too-short")
        webhooks.create(s, actor, receiver.url, SECRET)
    with hub.db.session() as s:  # subscribed from the feed's end: only later events
        feedlog.record_change(s, 1, "study.updated", study_uid="1.2.3.4", payload={"n": 1})
        feedlog.record_change(s, 1, "study.retracted", study_uid="1.2.3.4")

    # the receiver fails: the head delivery is retried, the next one waits behind it
    assert _round(hub) == 0
    assert _states(hub) == [(2, "pending", 1), (3, "pending", 0)]
    time.sleep(0.05)
    receiver.status = 204
    assert _round(hub) == 1  # event 2 now delivered
    time.sleep(0.05)
    assert _round(hub) == 1
    assert _states(hub) == [(2, "delivered", 2), (3, "delivered", 1)]
    sent = [json.loads(body) for _, body in receiver.received]
    assert [e["seq"] for e in sent] == [2, 2, 3]
    assert sent[-1]["kind"] == "study.retracted" and sent[-1]["facility"] == "HOSPA"
    headers, body = receiver.received[-1]
    ts = headers["X-PAIR-Timestamp"]
    assert headers["X-PAIR-Signature"] == webhooks.signature(SECRET, ts, body)
    assert webhooks.verify(SECRET, ts, body, headers["X-PAIR-Signature"])
    assert not webhooks.verify(SECRET, ts, body + b" ", headers["X-PAIR-Signature"])
    assert not webhooks.verify(SECRET, str(int(ts) - 3600), body, headers["X-PAIR-Signature"])

    # a subscriber that keeps failing: given up after 3 attempts, the log says why
    receiver.status = 503
    with hub.db.session() as s:
        feedlog.record_change(s, 1, "study.updated", study_uid="1.2.3.5")
    for _ in range(4):
        _round(hub)
        time.sleep(0.05)
    assert _states(hub)[-1] == (4, "failed", 3)
    with hub.db.session() as s:
        log = webhooks.deliveries(s, actor, 1, 10)
    assert log[0]["state"] == "failed" and log[0]["last_error"] == "HTTP 503"
    receiver.server.shutdown()
