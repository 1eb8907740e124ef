"""DICOM DIMSE listener: C-ECHO, C-STORE (all storage SOP classes) and Study Root C-FIND.

Calling AE titles must be registered (``pair ae add``); what a peer sends belongs to its
facility. C-STORE responses are sent only after the instance is committed; instances that
concurrent associations send are committed together (``PAIR_DICOM_GROUP_COMMIT``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from pair.accounts.models import AeTitle
from pair.audit.service import Actor, record
from pair.core.errors import PairError
from pair.core.node import Node
from pair.repository.dimse_guard import (
    GuardedAssociationServer,
    GuardLimits,
    quiet_library_logs,
)
from pair.repository.ingest import (
    IngestCommitter,
    IngestResult,
    Outcome,
    Payload,
    group_committer,
    ingest_batch,
)
from pair.repository.query import QidoQuery, find_instances, find_series, find_studies
from pair.repository.responses import instance_json, series_json, study_json

log = logging.getLogger("pair.dimse")

# Uncompressed, deflated, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE, ...
TRANSFER_SYNTAXES = [ts for ts in ALL_TRANSFER_SYNTAXES if not ts.endswith(".2.2")]  # no BE
_NO_MATCH = "\x00no-registered-peers"
_CHARSET = 0x00080005
_FIND_PACE = 100  # C-FIND responses between two chances for the peer's C-CANCEL to arrive
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "PN", "UC"}
STATUS_BY_REASON = {
    "too_large": 0xA700,
    "limit_exceeded": 0xA700,  # Refused: Out of Resources (a decompression bomb)
    "processing_failed": 0xC001,
    "conflict": 0xA900,
    "invalid_value": 0xA900,
}


class _PeerRegistry:
    """Calling AE title -> facility id, read from the database and cached briefly."""

    def __init__(self, node: Node, ttl: float = 2.0) -> None:
        self.node = node
        self.ttl = ttl
        self._cache: dict[str, int] = {}
        self._loaded = 0.0
        self._lock = threading.Lock()

    def peers(self) -> dict[str, int]:
        with self._lock:
            if time.monotonic() - self._loaded > self.ttl:
                from sqlalchemy import select

                with self.node.db.session() as s:
                    self._cache = {a.ae_title: a.facility_id for a in s.scalars(select(AeTitle))}
                self._loaded = time.monotonic()
            return self._cache


class PairAE(AE):
    """An AE whose calling-AE allow-list is the live list of registered peers."""

    registry: _PeerRegistry

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        return list(self.registry.peers()) or [_NO_MATCH]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        """The allow-list comes from the database; assignments are ignored."""


def _status(result: IngestResult) -> Dataset:
    status = Dataset()
    if result.outcome in (Outcome.STORED, Outcome.DUPLICATE):
        status.Status = 0x0000
    elif result.outcome is Outcome.QUARANTINED:
        status.Status = 0xB000  # warning: received, held for review (residual PHI)
        status.ErrorComment = "Held for de-identification review"
    else:
        status.Status = STATUS_BY_REASON.get(result.reason_code, 0xC000)
        status.ErrorComment = result.reason[:64]
    return status


class DimseServer:
    def __init__(self, node: Node, host: str, port: int, ae_title: str) -> None:
        self.node = node
        self.registry = _PeerRegistry(node)
        # concurrent associations' instances are indexed together (pair.repository.groupcommit)
        self.committer: IngestCommitter | None = (
            group_committer(node) if node.settings.dicom_group_commit else None
        )
        ae = PairAE(ae_title=ae_title)
        ae.registry = self.registry
        ae.maximum_pdu_size = 0  # unlimited
        quiet_library_logs()
        cfg = node.settings
        limits = GuardLimits(
            artim_s=cfg.dicom_artim_timeout_s,
            network_timeout_s=cfg.dicom_network_timeout_s,
            max_associations=cfg.dicom_max_associations,
            max_associations_per_address=cfg.dicom_max_associations_per_address,
            max_pending=cfg.dicom_max_pending,
            max_pending_per_address=cfg.dicom_max_pending_per_address,
        )
        ae.network_timeout = cfg.dicom_network_timeout_s
        ae.acse_timeout = cfg.dicom_artim_timeout_s
        ae.dimse_timeout = cfg.dicom_dimse_timeout_s
        # the guard rejects extra associations first; pynetdicom's own check stays a backstop
        ae.maximum_associations = cfg.dicom_max_associations + 1
        ae.add_supported_context(Verification)
        for ctx in AllStoragePresentationContexts:
            if ctx.abstract_syntax is not None:
                ae.add_supported_context(ctx.abstract_syntax, TRANSFER_SYNTAXES)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.ae = ae
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
        ]
        server: GuardedAssociationServer = ae.make_server(  # type: ignore[assignment]
            (host, port),
            evt_handlers=handlers,  # type: ignore[arg-type]
            server_class=GuardedAssociationServer,
            limits=limits,
        )
        ae._servers.append(server)  # where start_server keeps it (server.shutdown removes it)
        threading.Thread(target=server.serve_forever, name="DicomListener", daemon=True).start()
        self.server = server

    def shutdown(self, grace_s: float = 2.0) -> None:
        """Stop listening, give open associations ``grace_s`` to finish, then abort them:
        an idle peer holding its association open must not keep the node from stopping."""
        self.server.shutdown()
        self.server.drop_pending()
        deadline = time.monotonic() + grace_s
        while self.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self.server.active_associations:
            assoc.abort()

    # -- handlers ---------------------------------------------------------------------------

    def _on_open(self, event: Any) -> None:
        try:
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            log.debug("could not set TCP_NODELAY")

    def _on_aborted(self, event: Any) -> None:
        """One line per aborted association (peer's A-ABORT, malformed PDU, lost connection)."""
        requestor = event.assoc.requestor
        calling = str(requestor.ae_title or "").strip() or "-"
        log.warning("DICOM association from %s (AE %s) aborted", requestor.address, calling)

    def _actor(self, event: Any) -> tuple[Actor, int | None]:
        calling = str(event.assoc.requestor.ae_title).strip()
        facility_id = self.registry.peers().get(calling)
        host = event.assoc.requestor.address
        return Actor(None, f"AE:{calling}", facility_id, "device", f"dimse:{host}"), facility_id

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> Dataset | int:
        actor, facility_id = self._actor(event)
        if facility_id is None:
            return 0xA700
        try:
            # the bytes as sent (Part 10 meta built from the presentation context): the same
            # parse and validation as every other door, and picklable for the ingest workers
            data = event.encoded_dataset(include_meta=True)
        except Exception as exc:
            status = Dataset()
            status.Status = 0xC000
            status.ErrorComment = f"Cannot read data set: {type(exc).__name__}"[:64]
            return status
        payload = Payload(data=data)
        try:
            result = ingest_batch(
                self.node,
                facility_id,
                [payload],
                f"dimse:{actor.user_name[3:]}",
                actor,
                committer=self.committer,
            )[0]
        except PairError as exc:
            status = Dataset()
            status.Status = 0xC001
            status.ErrorComment = exc.message[:64]
            return status
        except Exception as exc:  # a database failure: a clear status, not pynetdicom's 0xC211
            log.error("C-STORE failed: %s", type(exc).__name__)  # the message may hold values
            status = Dataset()
            status.Status = 0xC001
            status.ErrorComment = "Processing failed; see the server log"
            return status
        return _status(result)

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        actor, facility_id = self._actor(event)
        identifier: Dataset = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", "")).upper()
        if facility_id is None or level not in ("STUDY", "SERIES", "IMAGE"):
            yield 0xA900, None
            return
        requested = [e for e in identifier if e.keyword != "QueryRetrieveLevel"]
        if any("\x00" in str(e.value) for e in requested if e.VR != "SQ"):
            log.info("C-FIND refused: a NUL byte in a matching key")
            yield 0xA900, None
            return
        try:
            results = self._find(facility_id, level, requested)
        except PairError as exc:
            log.info("C-FIND refused: %s", exc.message)
            yield 0xA900, None
            return
        with self.node.db.session() as s:
            record(
                s, actor, "cfind." + level.lower(), "study", "", detail={"results": len(results)}
            )
        for n, doc in enumerate(results, 1):  # each reply is built as it is sent
            if n % _FIND_PACE == 0:
                _let_peer_speak(event.assoc)
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, _reply(doc, level, requested)

    def _find(
        self, facility_id: int, level: str, requested: list[DataElement]
    ) -> list[dict[str, Any]]:
        q = QidoQuery(limit=100000)
        from pair.repository.query import KEYS, MODALITIES_IN_STUDY, REMOVED_SEQUENCE_KEYS

        for elem in requested:
            tag = int(elem.tag)
            if elem.value is None:
                value = ""
            elif elem.VM > 1:  # List of UID matching (PS3.4 C.2.2.2.2): values joined by "\\"
                value = "\\".join(str(v) for v in elem.value)
            else:
                value = str(elem.value)
            if elem.VR == "SQ":
                for item in elem.value or []:
                    for sub in item:
                        key = (tag, int(sub.tag))
                        if key in REMOVED_SEQUENCE_KEYS and str(sub.value or "").strip("*"):
                            q.removed_match = True
                continue
            if tag == _CHARSET:
                continue
            q.include.add(tag)  # a return key outside the index is read from the stored header
            if tag == MODALITIES_IN_STUDY:
                q.modalities_in_study = [v for v in value.split("\\") if v]
            elif tag in KEYS and value:
                q.matches[tag] = value
        base = ""
        with self.node.db.session() as s:
            if level == "STUDY":
                docs = [
                    study_json(self.node, s, st, q, base) for st in find_studies(s, facility_id, q)
                ]
            elif level == "SERIES":
                docs = [
                    series_json(self.node, s, se, st, q, base, with_study=True)
                    for se, st in find_series(s, facility_id, q)
                ]
            else:
                docs = [
                    instance_json(
                        self.node, s, i, se, st, q, base, with_series=True, with_study=True
                    )
                    for i, se, st in find_instances(s, facility_id, q)
                ]
        return docs


def _let_peer_speak(assoc: Any) -> None:
    """pynetdicom's DUL thread reads the socket only when it has nothing left to send: wait for
    its send queue to empty and give it an idle turn, so that a C-CANCEL the peer sent meanwhile
    is received (this also bounds the responses queued in memory)."""
    pending = assoc.dul.to_provider_queue
    deadline = time.monotonic() + 10
    while not pending.empty() and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(0.003)


def _reply(doc: dict[str, Any], level: str, requested: list[DataElement]) -> Dataset:
    """The C-FIND response identifier: the requested keys only, empty where there is no value."""
    full = Dataset.from_json(doc)
    reply = Dataset()
    reply.QueryRetrieveLevel = level
    asked_charset = False
    for elem in requested:
        if elem.tag == _CHARSET:
            asked_charset = True
        elif elem.tag in full:
            reply[elem.tag] = full[elem.tag]
        else:
            reply.add_new(elem.tag, elem.VR, None)
    if asked_charset or any(
        not str(e.value).isascii() for e in reply if e.VR in _TEXT_VRS and e.value
    ):
        reply.SpecificCharacterSet = "ISO_IR 192"  # values are UTF-8 (PS3.5 6.1.2.3)
    return reply


def start_dimse_server(node: Node, host: str, port: int, ae_title: str) -> DimseServer:
    return DimseServer(node, host, port, ae_title)
