"""`pair serve` stops both listeners cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.conftest import LiveNode

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    live = LiveNode(tmp_path / "n", f"sqlite:///{tmp_path / 'pair.db'}")
    live.provision()
    live.start()
    assert live.proc is not None
    live.proc.send_signal(sig)
    assert live.proc.wait(30) == 0
    for port in (live.port, live.dicom_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert "PAIR node stopped" in live.log_path.read_text()
