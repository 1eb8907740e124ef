"""Event-driven waits for pynetdicom's two reactor threads per association.

pynetdicom (3.0) polls: each accepted association runs a DUL thread and an association thread
that both wake every millisecond to look for work. On this project's 2-core machine one idle
association cost ~9 % of a core, and four associations storing concurrently spent about a
third of a core polling, taking the GIL from the ingest pipeline (issue 17's C-STORE profile).

Here the same threads wait until there is something to do, with the same code doing the work:

- the DUL thread waits in ``select`` on its socket and on a wake-up pipe that is written when
  the local side queues a primitive to send (a C-STORE response) or stops the DUL;
- the association thread waits on an event set when the DUL hands it a DIMSE message or an
  ACSE primitive (release or abort request), or when the DUL stops.

Both waits are bounded by ``WAIT_S`` so that the timers pynetdicom checks in its loops (ARTIM,
the idle/network timeout) keep working, at that resolution. ``make_event_driven`` is applied to
an association before its threads start, by ``EventDrivenRequestHandler`` (the DICOM server's
``GuardedRequestHandler`` builds on it; the benchmark floor uses it, so that it stays an upper
bound on the same stack).
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import threading
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import RequestHandler

WAIT_S = 0.05


class _RingingQueue(queue.Queue[Any]):
    """A queue that calls ``ring`` after every put, so that its consumer need not poll it."""

    def __init__(self, ring: Any) -> None:
        super().__init__()
        self._ring = ring

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._ring()


class _EventDrivenDUL(DULServiceProvider):
    """The DUL thread waits for socket data or a local primitive instead of sleeping 1 ms."""

    _wake_r: socket.socket
    _wake_w: socket.socket
    _assoc_bell: threading.Event

    def _ring(self) -> None:
        with contextlib.suppress(OSError):  # full (already rung) or closed (reactor ended)
            self._wake_w.send(b"\0")

    def kill_dul(self) -> None:
        super().kill_dul()
        self._ring()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._ring()
        return bool(super().stop_dul())

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._assoc_bell.set()  # the association thread checks dul.is_alive() next
            self._wake_r.close()
            self._wake_w.close()

    def _is_transport_event(self) -> bool:
        if self._nothing_to_do():
            with contextlib.suppress(OSError, ValueError):  # a closed socket: super() sees it
                raw: socket.socket = self.socket.socket  # type: ignore[union-attr,assignment]
                readable, _, _ = select.select([raw, self._wake_r], [], [], WAIT_S)
                if self._wake_r in readable:
                    self._wake_r.recv(4096)
        return super()._is_transport_event()

    def _nothing_to_do(self) -> bool:
        """True when waiting cannot miss work: no event or primitive queued, the socket open
        and holding no bytes already read into a buffer (the guard's prefix, TLS records)."""
        sock = self.socket
        raw = getattr(sock, "socket", None)
        if raw is None or not getattr(sock, "_is_connected", False) or self._kill_thread:
            return False
        if getattr(sock, "_prefix", None):  # pair.repository.dimse_guard._PrefixedSocket
            return False
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return False
        if self.state_machine.current_state == "Sta13":
            return False
        return self.event_queue.empty() and self.to_provider_queue.empty()


class _EventDrivenDIMSE(DIMSEServiceProvider):
    """The association thread's ``get_msg(block=False)`` waits for the DUL's bell instead of
    returning at once into a 1 ms sleep; blocking calls are unchanged."""

    _bell: threading.Event

    def get_msg(self, block: bool = False) -> Any:
        if not block and self.msg_queue.empty():
            self._bell.wait(WAIT_S)
        self._bell.clear()  # before looking: anything queued from here on rings again
        return super().get_msg(block)


class _EventDrivenAssociationMixin:
    """``kill`` also rings, so a waiting association thread notices at once."""

    def kill(self) -> None:
        super().kill()  # type: ignore[misc]
        self.dimse._bell.set()  # type: ignore[attr-defined]


_CLASSES: dict[type, type] = {}


def make_event_driven(assoc: Any) -> None:
    """Switch a not-yet-started pynetdicom ``Association`` to the event-driven waits."""
    bell = threading.Event()
    dul, dimse = assoc.dul, assoc.dimse
    wake_r, wake_w = socket.socketpair()  # closed by the reactor's end, or when collected
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    dul.__class__ = _EventDrivenDUL
    dul._wake_r, dul._wake_w, dul._assoc_bell = wake_r, wake_w, bell
    # the threads have not started: the queues are empty and nobody holds them yet
    dul.to_provider_queue = _RingingQueue(dul._ring)
    dul.to_user_queue = _RingingQueue(bell.set)
    dimse.__class__ = _EventDrivenDIMSE
    dimse._bell = bell
    dimse.msg_queue = _RingingQueue(bell.set)
    cls = type(assoc)
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"EventDriven{cls.__name__}", (_EventDrivenAssociationMixin, cls), {})
    assoc.__class__ = _CLASSES[cls]


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom's request handler, with the event-driven waits for every association."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        make_event_driven(assoc)
        return assoc
