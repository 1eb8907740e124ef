"""`pair serve` stops both listeners cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

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


def test_serve_stops_with_an_association_and_a_stalled_upload_open(tmp_path: Path) -> None:
    """A peer holding its association open and a client that stops sending its STOW-RS body
    get PAIR_SHUTDOWN_GRACE_S each, then are cut: they do not keep the node from stopping."""
    live = LiveNode(tmp_path / "n", f"sqlite:///{tmp_path / 'pair.db'}")
    live.env_overrides["PAIR_SHUTDOWN_GRACE_S"] = "1"
    live.provision()
    live.start()
    assert live.proc is not None
    ae = AE(ae_title=live.peer_ae)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", live.dicom_port, ae_title=live.ae_title)
    assert assoc.is_established
    stalled = socket.create_connection(("127.0.0.1", live.port))
    stalled.sendall(
        b"POST /dicomweb/studies HTTP/1.1\r\nHost: node\r\n"
        + f"Authorization: Bearer {live.tokens['dm_a']}\r\n".encode()
        + b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        + b"Content-Length: 1000000\r\n\r\n--b\r\n"
    )
    time.sleep(0.5)
    started = time.time()
    live.proc.send_signal(signal.SIGTERM)
    assert live.proc.wait(30) == 0
    assert time.time() - started < 15
    stalled.close()
    deadline = time.time() + 10
    while assoc.is_established and time.time() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    assert "PAIR node stopped" in live.log_path.read_text()


def _serve(live: LiveNode, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pair", "serve", "--data-dir", str(live.data_dir), *args]
    log = live.log_path.open("ab")
    return subprocess.Popen(cmd, env={**live.env, **env}, stdout=log, stderr=subprocess.STDOUT)


def test_serve_takes_ports_and_ae_title_from_pair_settings(tmp_path: Path) -> None:
    """PAIR_PORT, PAIR_DICOM_PORT, PAIR_AE_TITLE stand in for the options left out."""
    live = LiveNode(tmp_path / "n", f"sqlite:///{tmp_path / 'pair.db'}")
    live.provision()
    env = {
        "PAIR_PORT": str(live.port),
        "PAIR_DICOM_PORT": str(live.dicom_port),
        "PAIR_AE_TITLE": "ENVNODE",
        "PAIR_INGEST_WORKERS": "0",
        "PAIR_LOG_LEVEL": "warning",
    }
    proc = _serve(live, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(live.base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert proc.poll() is None, live.log_path.read_text()[-3000:]
        ae = AE(ae_title=live.peer_ae)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", live.dicom_port, ae_title="ENVNODE")
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0
        assoc.release()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    log = live.log_path.read_text()
    assert "PAIR node stopped" in log
    assert "Started server process" not in log and " INFO " not in log  # PAIR_LOG_LEVEL


def test_serve_refuses_bad_ae_title_and_busy_dicom_port(tmp_path: Path) -> None:
    live = LiveNode(tmp_path / "n", f"sqlite:///{tmp_path / 'pair.db'}")
    live.provision()
    ports = ["--port", str(live.port), "--dicom-port", str(live.dicom_port)]
    proc = _serve(live, *ports, "--ae-title", "A_TITLE_OF_17_CHR", env={})
    assert proc.wait(60) == 2
    log = live.log_path.read_text()
    assert "Invalid AE title 'A_TITLE_OF_17_CHR'" in log and "Traceback" not in log
    proc = _serve(live, *ports, env={"PAIR_LOG_LEVEL": "chatty"})
    assert proc.wait(60) == 2
    assert "PAIR_LOG_LEVEL must be one of" in live.log_path.read_text()

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", live.dicom_port))
        busy.listen()
        proc = _serve(live, *ports, env={"PAIR_INGEST_WORKERS": "1"})
        assert proc.wait(60) == 1
    log = " ".join(live.log_path.read_text().split())
    assert f"Cannot listen for DICOM on 127.0.0.1:{live.dicom_port}" in log
    assert "Traceback" not in log
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", live.port)) != 0, "HTTP port left open"
