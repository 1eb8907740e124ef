"""Webhooks: a facility subscribes a URL; every feed event is POSTed to it, signed.

Signature: ``X-PAIR-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` with
``X-PAIR-Timestamp`` (Unix seconds) and ``X-PAIR-Event-Seq``; the body is the event's JSON as
``GET /api/changes`` gives it. A receiver recomputes the HMAC over the raw body, compares in
constant time and refuses timestamps older than a few minutes (replay).

Delivery state lives in the database (``feed_delivery``), so a restarted worker, or a second
hub process running one, carries on: ``fan_out`` turns new events into deliveries per
subscription; ``deliver_due`` sends, per subscription, the oldest pending delivery (events
arrive in order), retrying with exponential backoff until ``PAIR_FEED_WEBHOOK_ATTEMPTS``.
On PostgreSQL a worker claims a subscription's head delivery while holding the subscription's
row (``FOR UPDATE SKIP LOCKED``: another worker skips that subscription for the round) and
leases it, so two workers never send the same delivery at once nor one subscription's events
out of order (``tests/sharing/test_hub_multiprocess.py``); receivers should still ignore a
sequence number they have seen (a lease can run out during a very slow POST).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.accounts.policy import Action, authorize, may
from pair.audit.feedlog import FeedEvent
from pair.audit.service import Actor, record
from pair.core.errors import Invalid, NotFound
from pair.core.node import Node
from pair.db.base import utcnow
from pair.sharing.feed.events import event_json, facility_code, last_seq
from pair.sharing.feed.models import FeedDelivery, FeedWebhook

log = logging.getLogger("pair.sharing.feed")

SIGNATURE_HEADER = "X-PAIR-Signature"
TIMESTAMP_HEADER = "X-PAIR-Timestamp"
SEQ_HEADER = "X-PAIR-Event-Seq"
MAX_AGE_S = 300
MIN_SECRET = 32
_MISSING = "No such webhook."
_FAN_OUT_BATCH = 500


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, given: str, now: float | None = None) -> bool:
    """Constant-time check of a delivery's signature and freshness (receiver side)."""
    if not secret or not timestamp.isdigit():
        return False
    if abs((now if now is not None else time.time()) - int(timestamp)) > MAX_AGE_S:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), given)


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 512:
        raise Invalid("The webhook URL must be an http(s) URL of at most 512 characters.")
    return url


def webhook_json(hook: FeedWebhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "active": hook.active,
        "cursor": hook.cursor,
        "created_at": hook.created_at.isoformat(),
    }


def create(
    session: Session, actor: Actor, url: str, secret: str | None = None
) -> tuple[FeedWebhook, str]:
    """Subscribe ``url`` for the actor's facility from the current end of the feed; returns
    the secret (the subscriber's own, or a new one shown only now)."""
    authorize(actor, Action.FEED_WEBHOOK_MANAGE, actor.facility_id)
    assert actor.facility_id is not None
    if secret is not None and not MIN_SECRET <= len(secret) <= 128:
        raise Invalid(f"A webhook secret must have {MIN_SECRET} to 128 characters.")
    secret = secret or secrets.token_urlsafe(32)
    hook = FeedWebhook(
        facility_id=actor.facility_id,
        url=_check_url(url),
        secret=secret,
        cursor=last_seq(session),
        created_by=actor.user_name,
    )
    session.add(hook)
    session.flush()
    record(session, actor, "feed.webhook.create", "webhook", str(hook.id))
    return hook, secret


def list_for(session: Session, actor: Actor) -> list[FeedWebhook]:
    authorize(actor, Action.FEED_WEBHOOK_MANAGE, actor.facility_id)
    stmt = select(FeedWebhook).where(FeedWebhook.facility_id == actor.facility_id)
    return list(session.scalars(stmt.order_by(FeedWebhook.id)))


def _own(session: Session, actor: Actor, webhook_id: int) -> FeedWebhook:
    hook = session.get(FeedWebhook, webhook_id)
    authorize(
        actor, Action.FEED_WEBHOOK_MANAGE, hook.facility_id if hook else None, missing=_MISSING
    )
    assert hook is not None
    return hook


def remove(session: Session, actor: Actor, webhook_id: int) -> None:
    hook = _own(session, actor, webhook_id)
    session.delete(hook)
    record(session, actor, "feed.webhook.delete", "webhook", str(webhook_id))


def _logged(session: Session, actor: Actor, webhook_id: int) -> FeedWebhook:
    """A subscription whose delivery log ``actor`` may read: its facility's admin or site node,
    or a hub operator (every facility's); another facility's answers as a missing one."""
    hook = session.get(FeedWebhook, webhook_id)
    authorize(actor, Action.FEED_WEBHOOK_LOG, hook.facility_id if hook else None, missing=_MISSING)
    if hook is None:
        raise NotFound(_MISSING)
    return hook


def logged_hooks(
    session: Session, actor: Actor, webhook_id: int | None = None
) -> list[dict[str, Any]]:
    """The subscriptions whose delivery logs ``actor`` reads, with counts per state and the
    latest error: the own facility's, or every facility's for a hub operator."""
    stmt = select(FeedWebhook, Facility.code).join(Facility, Facility.id == FeedWebhook.facility_id)
    if not may(actor, Action.FEED_WEBHOOK_LOG, None):  # not node-wide: one's own facility
        authorize(actor, Action.FEED_WEBHOOK_LOG, actor.facility_id)
        stmt = stmt.where(FeedWebhook.facility_id == actor.facility_id)
    if webhook_id is not None:
        stmt = stmt.where(FeedWebhook.id == webhook_id)
    hooks = session.execute(stmt.order_by(FeedWebhook.id)).all()
    counts: dict[tuple[int, str], int] = {
        (hook_id, state): n
        for hook_id, state, n in session.execute(
            select(FeedDelivery.webhook_id, FeedDelivery.state, func.count())
            .where(FeedDelivery.webhook_id.in_([h.id for h, _ in hooks]))
            .group_by(FeedDelivery.webhook_id, FeedDelivery.state)
        )
    }
    return [
        {
            **webhook_json(hook),
            "facility": code,
            "counts": {k: counts.get((hook.id, k), 0) for k in ("pending", "delivered", "failed")},
        }
        for hook, code in hooks
    ]


def deliveries(
    session: Session, actor: Actor, webhook_id: int, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """The delivery log of one subscription, newest first."""
    _logged(session, actor, webhook_id)
    rows = session.scalars(
        select(FeedDelivery)
        .where(FeedDelivery.webhook_id == webhook_id)
        .order_by(FeedDelivery.seq.desc())
        .limit(limit)
        .offset(offset)
    )
    return [
        {
            "seq": d.seq,
            "state": d.state,
            "attempts": d.attempts,
            "last_status": d.last_status,
            "last_error": d.last_error,
            "next_attempt_at": d.next_attempt_at.isoformat() if d.state == "pending" else None,
            "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
            "queued_at": d.created_at.isoformat(),
        }
        for d in rows
    ]


# ---- the delivery worker ---------------------------------------------------------------------


def fan_out(session: Session) -> int:
    """Queue new events as deliveries for every active subscription; returns how many."""
    hooks = session.scalars(
        select(FeedWebhook)
        .where(FeedWebhook.active.is_(True))
        .order_by(FeedWebhook.id)
        .with_for_update(skip_locked=True)
    ).all()
    queued = 0
    for hook in hooks:
        seqs = list(
            session.scalars(
                select(FeedEvent.seq)
                .where(FeedEvent.seq > hook.cursor)
                .order_by(FeedEvent.seq)
                .limit(_FAN_OUT_BATCH)
            )
        )
        if not seqs:
            continue
        session.add_all(FeedDelivery(webhook_id=hook.id, seq=seq) for seq in seqs)
        hook.cursor = seqs[-1]
        queued += len(seqs)
    return queued


def _claim(node: Node) -> list[tuple[int, str, str, int, int]]:
    """Take the oldest pending delivery of each subscription whose turn has come; leases it
    (next attempt pushed past the POST timeout) so no other worker sends it meanwhile."""
    now = utcnow()
    lease = timedelta(seconds=node.settings.feed_webhook_timeout_s * 2 + 5)
    claimed: list[tuple[int, str, str, int, int]] = []
    with node.db.session() as session:
        # Lock the subscription, not its head delivery: with SKIP LOCKED on the deliveries a
        # second worker would skip a head being claimed and take the next event, and the two
        # would be sent at once, out of order. A subscription another worker holds is skipped
        # this round; the lease keeps its claimed head from being sent twice after the commit.
        hooks = session.execute(
            select(FeedWebhook.id, FeedWebhook.url, FeedWebhook.secret)
            .where(FeedWebhook.active.is_(True))
            .order_by(FeedWebhook.id)
            .with_for_update(skip_locked=True)
        ).all()
        for hook_id, url, secret in hooks:
            head = session.scalar(
                select(FeedDelivery)
                .where(FeedDelivery.webhook_id == hook_id, FeedDelivery.state == "pending")
                .order_by(FeedDelivery.seq)
                .limit(1)
            )
            if head is None or head.next_attempt_at.replace(tzinfo=now.tzinfo) > now:
                continue
            head.next_attempt_at = now + lease
            claimed.append((head.id, url, secret, head.seq, head.attempts))
    return claimed


def _body(node: Node, seq: int) -> bytes:
    with node.db.session() as session:
        event = session.get(FeedEvent, seq)
        assert event is not None
        data = event_json(event, facility_code(session, event.facility_id))
    return json.dumps(data, separators=(",", ":")).encode()


def _send(client: httpx.Client, url: str, secret: str, seq: int, body: bytes) -> int:
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        TIMESTAMP_HEADER: timestamp,
        SEQ_HEADER: str(seq),
    }
    return client.post(url, content=body, headers=headers).status_code


def deliver_due(node: Node, client: httpx.Client) -> int:
    """One round: send each subscription's due head delivery; returns how many succeeded."""
    settings = node.settings
    done = 0
    for delivery_id, url, secret, seq, attempts in _claim(node):
        status: int | None = None
        error = ""
        try:
            status = _send(client, url, secret, seq, _body(node, seq))
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:256]
        with node.db.session() as session:
            values: dict[str, Any] = {"attempts": attempts + 1, "last_status": status}
            if not error:
                values.update(state="delivered", delivered_at=utcnow(), last_error="")
                done += 1
            elif attempts + 1 >= settings.feed_webhook_attempts:
                values.update(state="failed", last_error=error)
            else:
                delay = settings.feed_webhook_backoff_s * 2**attempts
                values.update(last_error=error, next_attempt_at=utcnow() + timedelta(seconds=delay))
            session.execute(
                update(FeedDelivery).where(FeedDelivery.id == delivery_id).values(values)
            )
        if error:
            log.info("webhook delivery of event %s to subscription failed: %s", seq, error)
    return done


def run_worker(node: Node, stop: threading.Event) -> None:
    """The hub's delivery loop (``pair serve --role hub``) until ``stop`` is set."""
    with httpx.Client(timeout=node.settings.feed_webhook_timeout_s) as client:
        while not stop.is_set():
            try:
                with node.db.session() as session:
                    fan_out(session)
                sent = deliver_due(node, client)
            except Exception:  # a database hiccup must not end the loop
                log.exception("webhook worker round failed")
                sent = 0
            if not sent:
                stop.wait(min(node.settings.feed_poll_s, 1.0))
