"""DICOM slot exhaustion: half-sent association requests, slow peers, per-address limits, and
one log line (no traceback) per malformed connection. Real sockets, dcmtk and pynetdicom."""

from __future__ import annotations

import logging
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from pair.core.config import get_settings
from pair.core.node import Node, open_node
from pair.db.throwaway import free_port
from pair.repository.dimse import DimseServer, start_dimse_server
from tests.factories import write_series

pytestmark = pytest.mark.integration

PEER = "TESTSCU"
# an A-ASSOCIATE-RQ header announcing 200 bytes, followed by only the first few of them
PARTIAL_RQ = struct.pack(">BBL", 0x01, 0, 200) + b"\x00\x01\x00\x00PAIR"

Serve = Callable[..., tuple[Node, DimseServer]]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start an in-process DICOM listener with the given ``dicom_*`` settings and one peer."""
    started: list[tuple[Node, DimseServer]] = []

    def start(**limits: float) -> tuple[Node, DimseServer]:
        from pair.accounts import service

        settings = get_settings(tmp_path / f"node{len(started)}", **limits)  # type: ignore[arg-type]
        node = open_node(settings=settings)
        with node.db.session() as s:
            service.add_ae_title(s, service.create_facility(s, "Hospital A", "HOSPA"), PEER)
        server = start_dimse_server(node, "127.0.0.1", free_port(), "PAIR")
        started.append((node, server))
        return node, server

    yield start
    for node, server in started:
        server.shutdown(grace_s=0.1)
        node.close()


def port_of(server: DimseServer) -> int:
    return int(server.server.server_address[1])


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    return sock


def dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which(args[0]), f"{args[0]} (dcmtk) is not installed"
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_half_sent_requests_do_not_lock_out_a_registered_sender(
    serve: Serve, tmp_path: Path
) -> None:
    # a long ARTIM: the attackers still hold their connections while the sender works
    _, server = serve(dicom_artim_timeout_s=30)
    port = port_of(server)
    attackers = [connect(port, f"127.0.0.{2 + i}") for i in range(40)]
    same_address = [connect(port) for _ in range(12)]  # more than the per-address pending limit
    for sock in attackers + same_address:
        sock.sendall(PARTIAL_RQ)
    time.sleep(0.3)

    t0 = time.monotonic()
    echo = dcmtk("echoscu", "-to", "5", "-aet", PEER, "-aec", "PAIR", "127.0.0.1", str(port))
    assert echo.returncode == 0, echo.stdout + echo.stderr
    files = write_series(tmp_path / "series", n=2)
    store = dcmtk(
        "storescu",
        "-to",
        "5",
        "-aet",
        PEER,
        "-aec",
        "PAIR",
        "127.0.0.1",
        str(port),
        *map(str, files),
    )
    assert store.returncode == 0, store.stdout + store.stderr
    assert time.monotonic() - t0 < 10
    # the attackers from other addresses were not needed to make room: they are still pending
    assert not any(closed_by_server(s, 0.01) for s in attackers)
    for sock in attackers + same_address:
        sock.close()


def test_slow_and_silent_peers_are_dropped_after_artim(serve: Serve) -> None:
    _, server = serve(dicom_artim_timeout_s=1)
    port = port_of(server)
    silent = connect(port)
    silent.sendall(PARTIAL_RQ)
    trickle = connect(port)
    t0 = time.monotonic()
    dropped = False
    for byte in PARTIAL_RQ * 20:  # one byte every 0.2 s: each read succeeds, the whole never does
        try:
            trickle.sendall(bytes([byte]))
        except OSError:
            dropped = True
            break
        if closed_by_server(trickle, 0.2):
            dropped = True
            break
    assert dropped
    assert time.monotonic() - t0 < 3
    assert closed_by_server(silent, 1)
    assert server.server.pending_count() == 0


def test_pending_limit_per_address_drops_the_oldest(serve: Serve) -> None:
    _, server = serve(dicom_artim_timeout_s=30, dicom_max_pending_per_address=3)
    port = port_of(server)
    socks = [connect(port) for _ in range(5)]
    for sock in socks:
        sock.sendall(PARTIAL_RQ)
        time.sleep(0.05)
    assert [closed_by_server(s, 0.5) for s in socks] == [True, True, False, False, False]
    for sock in socks:
        sock.close()


def test_extra_association_from_one_address_gets_a_rejection(serve: Serve) -> None:
    _, server = serve(dicom_max_associations_per_address=2)
    port = port_of(server)
    ae = AE(ae_title=PEER)
    ae.add_requested_context(Verification)
    ae.acse_timeout = 5
    held = [ae.associate("127.0.0.1", port, ae_title="PAIR") for _ in range(2)]
    assert all(a.is_established for a in held)
    t0 = time.monotonic()
    extra = ae.associate("127.0.0.1", port, ae_title="PAIR")
    assert extra.is_rejected and time.monotonic() - t0 < 3
    rj = extra.acceptor.primitive
    assert rj is not None
    assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2)  # local limit exceeded
    other = ae.associate("127.0.0.1", port, ae_title="PAIR", bind_address=("127.0.0.2", 0))
    assert other.is_established  # another address has its own allowance
    for assoc in [*held, other]:
        assoc.release()


def test_malformed_packets_give_one_log_line_without_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    _, server = serve(dicom_artim_timeout_s=1)
    port = port_of(server)
    caplog.set_level(logging.DEBUG, logger="pair")
    caplog.set_level(logging.INFO, logger="pynetdicom")
    probes = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not DICOM at all
        struct.pack(">BBL", 0x01, 0, 40) + b"\xff" * 40,  # an undecodable association request
        struct.pack(">BBL", 0x04, 0, 6) + b"\x00" * 6,  # P-DATA before any association
    ]
    for probe in probes:
        caplog.clear()
        sock = connect(port)
        sock.sendall(probe)
        assert closed_by_server(sock, 3)
        sock.close()
        time.sleep(0.3)
        lines = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert lines[0].exc_info is None and "Traceback" not in caplog.text
        assert "127.0.0.1" in lines[0].getMessage()


def test_bad_pdu_inside_an_association_gives_one_log_line(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    _, server = serve()
    port = port_of(server)
    caplog.set_level(logging.DEBUG, logger="pair")
    caplog.set_level(logging.INFO, logger="pynetdicom")
    ae = AE(ae_title=PEER)
    ae.add_requested_context(Verification)
    for garbage in (
        struct.pack(">BBL", 0x09, 0, 4) + b"\x00" * 4,  # unknown PDU type
        struct.pack(">BBL", 0x04, 0, 12) + b"\xff" * 12,  # P-DATA with a broken item
    ):
        assoc = ae.associate("127.0.0.1", port, ae_title="PAIR")
        assert assoc.is_established
        time.sleep(0.2)
        caplog.clear()
        assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
        assoc.dul.socket.socket.sendall(garbage)
        deadline = time.monotonic() + 5
        while server.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        assoc.abort()
        time.sleep(0.3)
        lines = [
            r for r in caplog.records if r.levelno >= logging.INFO and r.threadName != "MainThread"
        ]
        assert len(lines) == 1, [(r.name, r.getMessage()) for r in lines]
        assert lines[0].exc_info is None and "Traceback" not in caplog.text
        assert "127.0.0.1" in lines[0].getMessage() and "aborted" in lines[0].getMessage()


def test_associations_share_the_servers_contexts_without_changing_them(serve: Serve) -> None:
    """Each association gets the server's presentation contexts without pynetdicom's deep copy
    (~70 ms per association); negotiation must still accept what is asked and leave them as
    they were."""
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    _, server = serve()
    before = [
        (str(cx.abstract_syntax), list(cx.transfer_syntax), cx.scu_role, cx.scp_role)
        for cx in server.server.contexts
    ]
    ae = AE(ae_title=PEER)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.4.50"])
    first = ae.associate("127.0.0.1", port_of(server), ae_title="PAIR")
    second = ae.associate("127.0.0.1", port_of(server), ae_title="PAIR")
    try:
        assert first.is_established and second.is_established
        accepted = {str(cx.abstract_syntax): cx.transfer_syntax for cx in first.accepted_contexts}
        assert accepted[str(CTImageStorage)] == ["1.2.840.10008.1.2.4.50"]
        assert first.send_c_echo().Status == 0x0000
        acceptors = list(server.server.active_associations)
        assert len(acceptors) == 2
        for assoc in acceptors:
            shared = assoc.acceptor.supported_contexts
            assert shared is not server.server.contexts  # its own list ...
            assert all(a is b for a, b in zip(shared, server.server.contexts, strict=True))
    finally:
        first.release()
        second.release()
    after = [
        (str(cx.abstract_syntax), list(cx.transfer_syntax), cx.scu_role, cx.scp_role)
        for cx in server.server.contexts
    ]
    assert after == before


def test_idle_associations_wait_instead_of_polling(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom's two threads per association poll every millisecond (~1000 wake-ups per
    second each); PAIR's wait until the socket or the other thread has something for them
    (``pair.repository.dimse_reactor``). Counted over a second with two idle associations,
    then both still answer and release normally."""
    from pair.repository import dimse_reactor

    calls = {"dimse": 0, "dul": 0}
    get_msg = dimse_reactor._EventDrivenDIMSE.get_msg
    transport = dimse_reactor._EventDrivenDUL._is_transport_event

    def counted_get_msg(self: Any, block: bool = False) -> Any:
        calls["dimse"] += 1
        return get_msg(self, block)

    def counted_transport(self: Any) -> bool:
        calls["dul"] += 1
        return transport(self)

    monkeypatch.setattr(dimse_reactor._EventDrivenDIMSE, "get_msg", counted_get_msg)
    monkeypatch.setattr(dimse_reactor._EventDrivenDUL, "_is_transport_event", counted_transport)
    _, server = serve()
    ae = AE(ae_title=PEER)
    ae.add_requested_context(Verification)
    assocs = [ae.associate("127.0.0.1", port_of(server), ae_title="PAIR") for _ in range(2)]
    try:
        assert all(a.is_established for a in assocs)
        time.sleep(0.3)
        before = dict(calls)
        time.sleep(1.0)
        woke = {k: calls[k] - before[k] for k in calls}
        # two associations: event-driven ~2 x 20 wake-ups per thread kind, polling ~2 x 1000
        assert woke["dimse"] < 200, woke
        assert woke["dul"] < 200, woke
        assert all(a.send_c_echo().Status == 0x0000 for a in assocs)
    finally:
        for a in assocs:
            a.release()
    assert all(a.is_released for a in assocs)
    deadline = time.monotonic() + 5
    while server.server.active_associations and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not server.server.active_associations
