"""A guard in front of pynetdicom's association server against DICOM slot exhaustion.

pynetdicom reads a PDU with blocking ``recv`` calls on a socket without a timeout, so a peer
that sends half an A-ASSOCIATE-RQ and then nothing holds an association slot (and a thread)
until TCP gives up; 32 such connections made every sender fail with "Local Limit Exceeded",
without any registered AE title. Here a connection is handed to pynetdicom only once its
complete A-ASSOCIATE-RQ PDU has arrived within the ARTIM time (PS3.8 9.1.5), and:

- not-yet-complete ("pending") connections are limited per peer address and in total; when a
  limit is reached the *oldest* pending connection is dropped, so a new peer always gets its
  chance and an attacker cannot hold the door closed;
- established associations are limited per peer address and in total; an extra one gets a
  proper A-ASSOCIATE-RJ (transient, local limit exceeded), not a hang;
- every socket handed over carries the network (idle) timeout, so a peer that stalls in the
  middle of a later PDU is dropped after that time too.

Each refused or dropped connection is logged as one line (address, reason; never PDU content).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from pair.repository.dimse_reactor import EventDrivenRequestHandler

log = logging.getLogger("pair.dimse")

_A_ASSOCIATE_RQ = 0x01
_MAX_RQ_BYTES = 1024 * 1024  # far above any real A-ASSOCIATE-RQ (128 contexts, many syntaxes)
# A-ASSOCIATE-RJ: rejected-transient (2), source service-provider presentation (3),
# reason local-limit-exceeded (2) -- PS3.8 Table 9-21
_RJ_LOCAL_LIMIT = bytes([0x03, 0x00, 0, 0, 0, 4, 0x00, 0x02, 0x03, 0x02])
# A-ABORT from the service provider (2): unrecognized PDU (1) / unexpected PDU (2)
_ABORT_UNRECOGNIZED = bytes([0x07, 0x00, 0, 0, 0, 4, 0x00, 0x00, 0x02, 0x01])
_ABORT_UNEXPECTED = bytes([0x07, 0x00, 0, 0, 0, 4, 0x00, 0x00, 0x02, 0x02])
_KNOWN_PDU_TYPES = range(0x01, 0x08)


@dataclass(frozen=True)
class GuardLimits:
    artim_s: float = 10.0
    network_timeout_s: float = 60.0
    max_associations: int = 32
    max_associations_per_address: int = 8
    max_pending: int = 64
    max_pending_per_address: int = 8


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    host: str
    started: float = field(default_factory=time.monotonic)
    evicted: bool = False


class _PrefixedSocket(AssociationSocket):
    """An AssociationSocket that first returns the bytes the guard has already read."""

    _prefix: bytearray

    @property
    def ready(self) -> bool:
        return bool(self._prefix) or super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        head = self._prefix[:nr_bytes]
        del self._prefix[:nr_bytes]
        if len(head) < nr_bytes:
            head += super().recv(nr_bytes - len(head))
        return head


class _SharedContexts(list[Any]):
    """The server's supported presentation contexts, shared by every association.

    pynetdicom deep-copies them for each association it accepts: with every storage SOP class
    and 44 transfer syntaxes that is ~70 ms of CPU per association (a modality sending one
    study per association pays it per study). Negotiation only reads the acceptor's contexts
    and builds new ones for the result, so each association gets a new list of the same,
    never-modified context objects instead.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


class GuardedRequestHandler(EventDrivenRequestHandler):
    """pynetdicom's request handler, fed the A-ASSOCIATE-RQ that the guard read."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        sock = assoc.dul.socket
        server = cast(GuardedAssociationServer, self.server)
        sock.__class__ = _PrefixedSocket  # same object, same state: only recv/ready differ
        cast(_PrefixedSocket, sock)._prefix = bytearray(server._handover.pop(id(self.request), b""))
        return assoc


class GuardedAssociationServer(ThreadedAssociationServer):
    """Reads each connection's A-ASSOCIATE-RQ under a deadline before pynetdicom sees it."""

    daemon_threads = True
    limits: GuardLimits = GuardLimits()

    def __init__(self, *args: Any, limits: GuardLimits, **kwargs: Any) -> None:
        """``ae.make_server`` passes pynetdicom's arguments; ``limits`` are the guard's."""
        self.limits = limits
        self._lock = threading.Lock()
        self._assoc_lock = threading.Lock()
        self._pending: list[_Pending] = []  # oldest first
        self._handover: dict[int, bytes] = {}
        kwargs["request_handler"] = GuardedRequestHandler
        super().__init__(*args, **kwargs)
        self.contexts = _SharedContexts(self.contexts)

    # -- pending connections -----------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        entry = _Pending(request, str(client_address[0]))
        with self._lock:
            victims = self._make_room(entry.host)
            self._pending.append(entry)
        for victim in victims:
            victim.evicted = True
            _shutdown(victim.sock)  # its guard thread wakes up, logs and closes it
        threading.Thread(
            target=self._guard, args=(entry, client_address), name="DicomGuard", daemon=True
        ).start()

    def _make_room(self, host: str) -> list[_Pending]:
        """The pending connections to drop so that one more from ``host`` fits the limits."""
        mine = [p for p in self._pending if p.host == host and not p.evicted]
        live = [p for p in self._pending if not p.evicted]
        if len(mine) >= self.limits.max_pending_per_address:
            return mine[: len(mine) - self.limits.max_pending_per_address + 1]
        if len(live) >= self.limits.max_pending:
            return live[: len(live) - self.limits.max_pending + 1]
        return []

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def drop_pending(self) -> None:
        with self._lock:
            entries = list(self._pending)
        for entry in entries:
            entry.evicted = True
            _shutdown(entry.sock)

    def _guard(self, entry: _Pending, client_address: Any) -> None:
        sock, host = entry.sock, entry.host
        try:
            pdu, why = _read_associate_rq(sock, entry.started + self.limits.artim_s)
        except OSError as exc:
            pdu, why = None, f"connection error ({type(exc).__name__})"
        with self._lock:
            self._pending.remove(entry)
        if pdu is None:
            if entry.evicted:
                why = "dropped to make room for newer connections (pending limit)"
            log.warning("DICOM connection from %s closed: %s", host, why)
            _close(sock)
            return
        try:
            sock.settimeout(self.limits.network_timeout_s)
            with self._assoc_lock:
                active = self.active_associations
                same = sum(1 for a in active if a.requestor.address == host)
                if len(active) >= self.limits.max_associations:
                    why = f"{len(active)} associations open (limit)"
                elif same >= self.limits.max_associations_per_address:
                    why = f"{same} associations open from this address (limit)"
                else:
                    self._handover[id(sock)] = pdu
                    self.finish_request(sock, client_address)  # starts the association thread
                    return
            log.warning("DICOM association from %s rejected: %s", host, why)
            sock.sendall(_RJ_LOCAL_LIMIT)
            time.sleep(0.05)  # let the peer read the rejection before the close
        except Exception as exc:  # one line, no traceback: the peer's behaviour is not our bug
            self._handover.pop(id(sock), None)
            log.warning("DICOM connection from %s failed: %s", host, type(exc).__name__)
        _close(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints a traceback to stderr here; a peer's fault gets one log line."""
        log.warning("DICOM connection from %s failed", client_address[0])


# pynetdicom modules that report on the peer's bytes: their errors and tracebacks describe a
# peer's malformed input, not a fault of the node, and can quote the received bytes; the node
# logs one line of its own per refused connection or aborted association instead
_PEER_INPUT_LOGGERS = ("dul", "utils", "pdu", "pdu_items", "fsm")


class _PeerInputFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.rsplit(".", 1)[-1] in _PEER_INPUT_LOGGERS:
            return record.levelno < logging.INFO
        # an exception in the node's own event handlers keeps its traceback
        return not str(record.msg).startswith("Association Aborted")


_FILTER = _PeerInputFilter()


def quiet_library_logs() -> None:
    """Install the filter on pynetdicom's loggers (a logger's filter does not see the records
    of its children, so each module logger gets it)."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "pynetdicom"]
    for name in ["pynetdicom", *names]:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _read_associate_rq(sock: socket.socket, deadline: float) -> tuple[bytes | None, str]:
    """The complete A-ASSOCIATE-RQ PDU read before ``deadline``, or None and why not."""
    header = _read(sock, 6, deadline)
    if header is None or len(header) < 6:
        return None, _why_short(header, deadline, "association request header")
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type != _A_ASSOCIATE_RQ:
        known = pdu_type in _KNOWN_PDU_TYPES
        _send_quietly(sock, _ABORT_UNEXPECTED if known else _ABORT_UNRECOGNIZED)
        kind = "unexpected" if known else "unrecognized"
        return None, f"{kind} PDU type 0x{pdu_type:02X} instead of an association request"
    if length > _MAX_RQ_BYTES:
        _send_quietly(sock, _ABORT_UNRECOGNIZED)
        return None, f"association request of {length} bytes (limit {_MAX_RQ_BYTES})"
    body = _read(sock, length, deadline)
    if body is None or len(body) < length:
        return None, _why_short(body, deadline, "association request")
    try:  # decoded here once, so that pynetdicom never meets an undecodable request
        A_ASSOCIATE_RQ().decode(header + body)
    except Exception as exc:
        _send_quietly(sock, _ABORT_UNRECOGNIZED)
        return None, f"undecodable association request ({type(exc).__name__})"
    return header + body, ""


def _why_short(data: bytes | None, deadline: float, what: str) -> str:
    if time.monotonic() >= deadline:
        return f"incomplete {what} when the ARTIM timer expired"
    return f"peer closed the connection during the {what}"


def _read(sock: socket.socket, n: int, deadline: float) -> bytes | None:
    """Up to ``n`` bytes; short when the peer closes or the deadline passes (never later)."""
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(buf)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(n - len(buf), 65536))
        except TimeoutError:
            return bytes(buf)
        if not chunk:
            return bytes(buf)
        buf += chunk
    return bytes(buf)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.settimeout(1.0)
        sock.sendall(data)
    except OSError:
        pass


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _close(sock: socket.socket) -> None:
    _shutdown(sock)
    with contextlib.suppress(OSError):
        sock.close()
