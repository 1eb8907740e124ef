"""A client that goes away in the middle of a STOW-RS upload is one warning line in the server
log, not an "Unhandled error" with a traceback (a live `pair serve`, a raw socket as client)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveNode

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_live(tmp_path: Path) -> Iterator[LiveNode]:
    """The subject is the HTTP server, not the database: SQLite only."""
    server = LiveNode(tmp_path / "live", f"sqlite:///{tmp_path / 'pair.db'}")
    server.provision()
    server.start()
    yield server
    server.stop()


def test_client_gone_mid_stow_is_one_warning(sqlite_live: LiveNode) -> None:
    live = sqlite_live
    before = live.log_path.read_text()
    head = (
        "POST /dicomweb/studies HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{live.port}\r\n"
        f"Authorization: Bearer {live.tokens['dm_a']}\r\n"
        'Content-Type: multipart/related; type="application/dicom"; boundary=XyZ\r\n'
        "Content-Length: 1000000\r\n\r\n"
    )
    body = b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + b"\x00" * 200_000
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(head.encode() + body)  # a fifth of what was announced, then gone
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while "disconnect" not in live.log_path.read_text()[len(before) :].lower():
        assert time.monotonic() < deadline, "no log line about the disconnect"
        time.sleep(0.1)
    time.sleep(0.5)
    new = live.log_path.read_text()[len(before) :]
    assert "Traceback" not in new and "Unhandled error" not in new, new
    lines = [line for line in new.splitlines() if "disconnect" in line.lower()]
    assert len(lines) == 1 and " WARNING " in lines[0], new
    assert "/dicomweb/studies" in lines[0]
    # the server is still fine for the next client
    import httpx

    assert httpx.get(live.base_url + "/healthz", timeout=5).status_code == 200
