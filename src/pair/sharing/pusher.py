"""Push the outbox to the hub: STOW-RS for instances, the hub's JSON API for the rest.

State lives only in ``sharing_outbox``: an item becomes ``sent`` after the hub acknowledged it
(the STOW-RS response or a 2xx), so a kill or a cut connection leaves it queued and the next
round sends it again; the hub answers a repeat as a no-op (a stored SOP instance is a duplicate,
a JSON item carries its idempotency key). Transport errors, 5xx, 401/403 and "not yet there"
(404 for data whose study has not arrived) are retried with exponential backoff and jitter;
a hub's refusal of the content itself marks the item ``failed`` for an admin to look at.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.clinical.models import ClinicalRecord
from pair.core.config import Settings
from pair.core.errors import Invalid, PairError
from pair.core.node import Node
from pair.reporting.models import Report, ReportVersion
from pair.repository.ingest import content_store
from pair.repository.models import Instance, Study
from pair.sharing.models import OutboxItem, OutboxStatus
from pair.sharing.outbox import KINDS, enqueue_pending

log = logging.getLogger("pair.sharing")
RETRYABLE = frozenset({401, 403, 404, 408, 425, 429}) | frozenset(range(500, 600))
_FAILED_SOP_SEQUENCE, _REFERENCED_SOP, _FAILURE_REASON = "00081198", "00081155", "00081197"
_ERROR_COMMENT = "00000902"


def check_hub_url(url: str) -> str:
    """https, or plain http only to a loopback address (tests, a proxy on the same host)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"PAIR_HUB_URL must be an http(s) URL, not {url!r}.")
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise Invalid("PAIR_HUB_URL must use https (plain http only to a loopback address).")
    return url.rstrip("/")


class HubClient:
    """One HTTP(S) client for the hub with the site's credential; verifies the certificate."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        token = settings.hub_token.get_secret_value()
        if not settings.hub_url or not token:
            raise Invalid("No hub configured: set PAIR_HUB_URL and PAIR_HUB_TOKEN.")
        self.base = check_hub_url(settings.hub_url)
        verify: Any = settings.hub_ca_file or True
        self.client = httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(60.0, connect=5.0),
            verify=verify,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()


def _backoff(settings: Settings, attempts: int) -> float:
    base = min(settings.hub_backoff_max_s, settings.hub_backoff_s * 2 ** min(attempts, 30))
    return base * random.uniform(0.5, 1.0)


def _retry(settings: Settings, items: list[OutboxItem], error: str) -> None:
    now = time.time()
    for item in items:
        item.attempts += 1
        item.last_error = error[:1000]
        item.next_attempt_s = now + _backoff(settings, item.attempts)


def _sent(items: list[OutboxItem]) -> None:
    at = datetime.now(UTC)
    for item in items:
        item.status, item.sent_at, item.last_error = OutboxStatus.SENT, at, ""


def _failed(item: OutboxItem, error: str) -> None:
    item.attempts += 1
    item.status, item.last_error = OutboxStatus.FAILED, error[:1000]


def _describe(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        detail = body.get("detail") or body.get("message") or body.get("error") or ""
    except ValueError:
        detail = ""
    return f"hub answered {resp.status_code} {detail}".strip()


def _multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for data in parts:
        chunks += [
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            data,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _push_instances(node: Node, session: Session, hub: HubClient, items: list[OutboxItem]) -> None:
    rows = {
        r.sop_instance_uid: r
        for r in session.scalars(
            select(Instance).where(Instance.sop_instance_uid.in_([i.object_key for i in items]))
        )
    }
    store = content_store(node)
    ready: list[OutboxItem] = []
    parts: list[bytes] = []
    for item in items:
        row = rows.get(item.object_key)
        if row is None:
            _failed(item, "The instance is no longer stored at this site.")
            continue
        ready.append(item)
        parts.append(store.read(row.storage_path))
    if not ready:
        return
    body, content_type = _multipart(parts)
    try:
        resp = hub.client.post(
            "/dicomweb/studies", content=body, headers={"Content-Type": content_type}
        )
    except httpx.HTTPError as exc:
        _retry(node.settings, ready, f"{type(exc).__name__}: {exc}")
        return
    if resp.status_code not in (200, 202, 409):
        if resp.status_code in RETRYABLE:
            _retry(node.settings, ready, _describe(resp))
        else:
            for item in ready:
                _failed(item, _describe(resp))
        return
    failed: dict[str, str] = {}
    try:
        sequence = resp.json().get(_FAILED_SOP_SEQUENCE, {}).get("Value", [])
    except ValueError:
        sequence = []
    for entry in sequence:
        uid = (entry.get(_REFERENCED_SOP, {}).get("Value") or [""])[0]
        reason = (entry.get(_FAILURE_REASON, {}).get("Value") or [0])[0]
        comment = (entry.get(_ERROR_COMMENT, {}).get("Value") or [""])[0]
        failed[uid] = f"hub refused the instance (0x{int(reason):04X}) {comment}".strip()
    if resp.status_code == 409 and not sequence:
        _retry(node.settings, ready, _describe(resp))
        return
    for item in ready:
        if item.object_key in failed:
            _failed(item, failed[item.object_key])
        else:
            _sent([item])


def _clinical_body(session: Session, item: OutboxItem) -> dict[str, Any] | None:
    patient_pk = int(item.object_key.split("@", 1)[0])
    row = session.scalar(select(ClinicalRecord).where(ClinicalRecord.patient_pk == patient_pk))
    uids = list(session.scalars(select(Study.study_uid).where(Study.patient_pk == patient_pk)))
    if row is None or not uids:
        return None
    return {"study_uids": uids, "data": row.data, "dictionary_version": row.dictionary_version}


def _report_body(session: Session, item: OutboxItem) -> dict[str, Any] | None:
    report_id, version = (int(v) for v in item.object_key.split("v", 1))
    report = session.get(Report, report_id)
    found = session.scalar(
        select(ReportVersion).where(
            ReportVersion.report_id == report_id, ReportVersion.version == version
        )
    )
    if report is None or found is None:
        return None
    return {
        "study_uid": report.study_uid,
        "module_id": report.module_id,
        "module_version": found.module_version,
        "version": found.version,
        "status": found.status,
        "inputs": found.inputs,
        "evaluation": found.evaluation,  # the coded CDE values
        "text": found.text,
        "signed_at": found.signed_at.isoformat() if found.signed_at else None,
        "amend_reason": found.amend_reason,
        "sr_sop_instance_uid": found.sr_sop_instance_uid,
    }


def _prepare_feedback(node: Node) -> None:
    """Sign each queued feedback item's envelope once, with the item's key as its feedback id,
    and commit it before the first attempt: every resend is then byte-identical (the hub
    acknowledges a repeat, and refuses the same id with other content)."""
    from pair.evaluation import feedback as fb
    from pair.evaluation.runs.models import EvaluationRun
    from pair.evaluation.runs.service import feedback_envelope

    with node.db.session() as s:
        items = s.scalars(
            select(OutboxItem).where(
                OutboxItem.kind == "feedback",
                OutboxItem.status == OutboxStatus.QUEUED,
                OutboxItem.payload.is_(None),
            )
        )
        for item in items:
            run = s.get(EvaluationRun, int(item.object_key))
            if run is None:
                _failed(item, "The evaluation run is no longer at this site.")
                continue
            try:
                envelope = feedback_envelope(node, s, run)
                payload = dict(
                    envelope["payload"], feedback_id=str(uuid.UUID(item.idempotency_key))
                )
                key = fb.load_key(node.settings.data_dir / "keys" / "feedback.key")
                item.payload = fb.sign_payload(payload, key, envelope["signature"]["key_id"])
            except PairError as exc:  # e.g. a run whose result cannot be summarised
                _failed(item, f"Feedback could not be built: {exc}")


def _push_json(node: Node, session: Session, hub: HubClient, item: OutboxItem) -> None:
    body: dict[str, Any] | None
    if item.kind == "clinical":
        path, body = "/api/hub/clinical", _clinical_body(session, item)
    elif item.kind == "report":
        path, body = "/api/hub/reports", _report_body(session, item)
    else:
        path, body = "/api/registry/feedback", item.payload
    if body is None:
        _failed(item, f"The {item.kind} is no longer at this site.")
        return
    headers = {"Idempotency-Key": item.idempotency_key}
    if item.kind == "feedback":  # as pair.evaluation.feedback.submit_feedback sends it
        sig = body["signature"]
        headers["Idempotency-Key"] = str(body["payload"]["feedback_id"])
        headers["X-PAIR-Signature"] = f"{sig['alg']} {sig['key_id']}:{sig['value']}"
    else:
        body["idempotency_key"] = item.idempotency_key
    try:
        resp = hub.client.post(path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        _retry(node.settings, [item], f"{type(exc).__name__}: {exc}")
        return
    if resp.is_success:
        _sent([item])
    elif resp.status_code in RETRYABLE:
        _retry(node.settings, [item], _describe(resp))
    else:
        _failed(item, _describe(resp))


def push_once(node: Node, hub: HubClient, *, enqueue: bool = True) -> dict[str, int]:
    """One round: queue what is new, then send every due item, instances first. Returns the
    number of items sent, retried later and failed in this round."""
    from pair.accounts.models import Facility

    before: dict[str, int] = {}
    with node.db.session() as s:
        if enqueue:
            for facility_id in s.scalars(select(Facility.id)):
                enqueue_pending(s, facility_id)
    _prepare_feedback(node)
    batch = node.settings.hub_push_batch
    outcome = {OutboxStatus.SENT: 0, OutboxStatus.FAILED: 0, "retry": 0}
    for kind in KINDS:
        last_id = 0
        while True:
            with node.db.session() as s:
                items = list(
                    s.scalars(
                        select(OutboxItem)
                        .where(
                            OutboxItem.kind == kind,
                            OutboxItem.status == OutboxStatus.QUEUED,
                            OutboxItem.next_attempt_s <= time.time(),
                            OutboxItem.id > last_id,
                        )
                        .order_by(OutboxItem.id)
                        .limit(batch if kind == "instance" else 1)
                    )
                )
                if not items:
                    break
                last_id = items[-1].id
                before = {str(i.id): i.attempts for i in items}
                if kind == "instance":
                    _push_instances(node, s, hub, items)
                else:
                    _push_json(node, s, hub, items[0])
                for item in items:
                    if item.status == OutboxStatus.QUEUED:
                        outcome["retry"] += item.attempts > before[str(item.id)]
                    else:
                        outcome[item.status] += 1
    return outcome


class Pusher:
    """The background pusher of ``pair serve --role site``: a round every
    ``PAIR_HUB_PUSH_INTERVAL_S``; errors are logged (never PHI: item ids and hub answers)."""

    def __init__(self, node: Node, hub_factory: Callable[[], HubClient] | None = None) -> None:
        self.node = node
        self.stop_event = threading.Event()
        self.hub = (hub_factory or (lambda: HubClient(node.settings)))()
        self.thread = threading.Thread(target=self._run, name="pair-hub-pusher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                outcome = push_once(self.node, self.hub)
                if any(outcome.values()):
                    log.info("hub push round: %s", outcome)
            except Exception:  # a bad round is logged; the loop must go on
                log.exception("hub push round failed")
            self.stop_event.wait(self.node.settings.hub_push_interval_s)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        self.hub.close()
