"""Subscriber side: follow the hub's feed and pull new cases into this node.

Origin attribution: a pulled case is ingested through the normal path (de-identified again
with the local facility's profile) into the facility ``PAIR_FEED_FACILITY`` (default: the first
facility), marked not shareable (so this site's outbox never sends it back to the hub), and a
``feed_origin`` row keeps the hub's study UID, the origin facility's code at the hub and the
local study UID. A ``study.retracted`` event removes the local copy. Events of this site's
own facility at the hub are skipped (the site has the original). The last processed sequence
number is stored (``feed_cursor``) after each event, so a restart resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.audit.feedlog import STUDY_RETRACTED, STUDY_UPDATED, record_change
from pair.audit.service import Actor, record
from pair.core.errors import Invalid, NotFound, PairError
from pair.core.node import Node
from pair.db.base import utcnow
from pair.repository.ingest import Payload, ingest_batch
from pair.repository.models import Study
from pair.repository.multipart import split_related
from pair.sharing.feed.models import FeedCursor, FeedOrigin
from pair.sharing.feed.studies import CaseFilter, delete_files, remove_study

log = logging.getLogger("pair.sharing.feed")
ORIGIN_HEADER = "X-PAIR-Origin-Facility"
_PAGE = 100
_lock = threading.Lock()  # one follower round at a time in this process


class HubUnavailable(PairError):
    http_status = 502
    code = "hub_unavailable"


class HubClient:
    """The hub's feed and case API with this site's site-node token."""

    def __init__(self, node: Node) -> None:
        settings = node.settings
        if not settings.hub_url or not settings.hub_token.get_secret_value():
            raise Invalid("Set PAIR_HUB_URL and PAIR_HUB_TOKEN to follow a hub's feed.")
        self.url = settings.hub_url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url,
            timeout=settings.feed_hub_timeout_s,
            headers={"Authorization": f"Bearer {settings.hub_token.get_secret_value()}"},
        )

    def close(self) -> None:
        self.client.close()

    def _get(self, path: str, **params: Any) -> httpx.Response:
        try:
            response = self.client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"The hub did not answer: {type(exc).__name__}.") from None
        if response.status_code == 404:
            raise NotFound("The hub has no such case.")
        if response.status_code != 200:
            raise HubUnavailable(f"The hub answered HTTP {response.status_code} for {path}.")
        return response

    def changes(self, since: int, limit: int = _PAGE) -> dict[str, Any]:
        data: dict[str, Any] = self._get("/api/changes", since=since, limit=limit).json()
        return data

    def cases(self, where: CaseFilter, limit: int, offset: int) -> dict[str, Any]:
        """A page of the hub's cases (``GET /api/hub/studies``) with its filters."""
        params: dict[str, Any] = {**where.params(), "limit": limit, "offset": offset}
        data: dict[str, Any] = self._get("/api/hub/studies", **params).json()
        return data

    def study(self, study_uid: str) -> tuple[str, list[bytes]]:
        """(origin facility code, Part 10 instances) of a hub case."""
        response = self._get(f"/api/hub/studies/{study_uid}")
        parts = split_related(
            response.content, response.headers.get("content-type", ""), "application/dicom"
        )
        return response.headers.get(ORIGIN_HEADER, ""), [data for _, data in parts]


@dataclass
class FollowResult:
    events: int = 0
    pulled: int = 0
    retracted: int = 0
    skipped: int = 0
    last_seq: int = 0


def local_facility(session: Session, code: str) -> Facility:
    stmt = select(Facility).order_by(Facility.id)
    if code:
        stmt = stmt.where(Facility.code == code)
    facility = session.scalars(stmt).first()
    if facility is None:
        raise Invalid(f"No local facility {code!r} to pull hub cases into (PAIR_FEED_FACILITY).")
    return facility


def _cursor(session: Session, hub_url: str) -> FeedCursor:
    cursor = session.scalar(select(FeedCursor).where(FeedCursor.hub_url == hub_url))
    if cursor is None:
        cursor = FeedCursor(hub_url=hub_url, last_seq=0)
        session.add(cursor)
        session.flush()
    return cursor


def _save_cursor(node: Node, hub_url: str, seq: int) -> None:
    with node.db.session() as session:
        _cursor(session, hub_url)
        session.execute(
            update(FeedCursor)
            .where(FeedCursor.hub_url == hub_url, FeedCursor.last_seq < seq)
            .values(last_seq=seq, updated_at=utcnow())
        )


def pull(
    node: Node, hub: HubClient, study_uid: str, seq: int = 0, *, by: Actor | None = None
) -> int:
    """Fetch a hub case (WADO-RS style) and ingest it locally; returns instances accepted.
    ``by``: the user who chose the case (browse and pull), recorded in the audit log."""
    origin, parts = hub.study(study_uid)
    with node.db.session() as session:
        facility_id = local_facility(session, node.settings.feed_facility).id
    actor = Actor.system(f"feed:{origin}", facility_id)
    payloads = [Payload(data=data, label=str(n)) for n, data in enumerate(parts, 1)]
    # not shareable from the commit on: this site's outbox never sends it back (no echo)
    results = ingest_batch(node, facility_id, payloads, f"hub:{origin}", actor, shareable=False)
    accepted = [r for r in results if r.accepted]
    local_uid = accepted[0].study_uid if accepted else ""
    with node.db.session() as session:
        row = session.scalar(select(FeedOrigin).where(FeedOrigin.hub_study_uid == study_uid))
        if row is None:
            row = FeedOrigin(hub_url=hub.url, hub_study_uid=study_uid, facility_id=facility_id)
            session.add(row)
        row.local_study_uid, row.origin_facility = local_uid, origin[:16]
        row.seq, row.instances, row.pulled_at = max(seq, row.seq or 0), len(accepted), utcnow()
        record(
            session,
            by or actor,
            "feed.pull",
            "study",
            local_uid,
            detail={"hub_study_uid": study_uid, "origin": origin, "instances": len(accepted)},
        )
    return len(accepted)


def retract_local(node: Node, hub_study_uid: str) -> bool:
    """Remove the local copy of a case its origin retracted at the hub."""
    with node.db.session() as session:
        origin = session.scalar(select(FeedOrigin).where(FeedOrigin.hub_study_uid == hub_study_uid))
        if origin is None:
            return False
        study = session.scalar(select(Study).where(Study.study_uid == origin.local_study_uid))
        paths = remove_study(session, study) if study is not None else []
        actor = Actor.system("feed:retraction", origin.facility_id)
        record(
            session,
            actor,
            "feed.retracted",
            "study",
            origin.local_study_uid,
            detail={"hub_study_uid": hub_study_uid, "origin": origin.origin_facility},
        )
        if study is not None:
            record_change(
                session, origin.facility_id, STUDY_RETRACTED, study_uid=origin.local_study_uid
            )
        session.delete(origin)
    delete_files(node, paths)
    return True


def follow_once(node: Node, hub: HubClient | None = None) -> FollowResult:
    """Process every event after the stored cursor, page by page, until the feed's end."""
    own_client = hub is None
    hub = hub or HubClient(node)
    result = FollowResult()
    try:
        with _lock:
            with node.db.session() as session:
                result.last_seq = _cursor(session, hub.url).last_seq
            while True:
                page = hub.changes(result.last_seq)
                events = page.get("events", [])
                if not events:
                    return result
                for event in events:
                    _apply(node, hub, event, page.get("facility", ""), result)
                    result.last_seq = int(event["seq"])
                    result.events += 1
                    _save_cursor(node, hub.url, result.last_seq)
    finally:
        if own_client:
            hub.close()


def _apply(
    node: Node, hub: HubClient, event: dict[str, Any], own: str, result: FollowResult
) -> None:
    uid, kind = str(event.get("study_uid", "")), event.get("kind")
    if not uid or event.get("facility") == own:
        result.skipped += 1
    elif kind == STUDY_UPDATED:
        try:
            pull(node, hub, uid, int(event["seq"]))
            result.pulled += 1
        except NotFound:  # retracted since: its retraction event follows
            result.skipped += 1
    elif kind == STUDY_RETRACTED:
        result.retracted += int(retract_local(node, uid))
    else:
        result.skipped += 1


def follow_quietly(node: Node) -> None:
    """One round for a background job: failures are logged, the next round retries."""
    try:
        follow_once(node)
    except PairError as exc:
        log.warning("following the hub's feed: %s", exc)
    except Exception:
        log.exception("following the hub's feed failed")


def run_follower(node: Node, stop: threading.Event) -> None:
    """``pair serve`` with PAIR_FEED_FOLLOW=1: poll the hub's feed until ``stop``."""
    while not stop.is_set():
        follow_quietly(node)
        stop.wait(node.settings.feed_poll_s)
