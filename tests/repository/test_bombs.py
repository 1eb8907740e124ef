"""Decompression bombs at every door: STOW-RS, C-STORE, portal upload, rendering, ``pair import``.

Each bomb inflates to 256 MiB (or lists more members than allowed) and must be refused with a
clear 413 / STOW failure / C-STORE failure / CLI error, leaving no file or row behind, while
the node's peak resident memory grows by less than ``RSS_BOUND``. The bound: 64 MiB is a
quarter of one bomb and leaves room for allocator noise and buffers of a few MiB (bodies
here are at most 48 MiB but are streamed in 64 KiB pieces); before the limits the same bombs
grew the node by at least the inflated size (the audit measured +384 MB for 128 MiB).

The live node runs with small limits (``LIMITS``) so that the tests stay cheap; the
defaults are checked separately.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, generate_uid
from sqlalchemy import func, select
from typer.testing import CliRunner

from pair.cli.main import app
from pair.core.config import Settings
from pair.core.errors import LimitExceeded
from pair.core.node import open_node
from pair.db.throwaway import PostgresServer
from pair.dicom.deflate import inflated_size
from pair.repository.models import ImportedFile, Instance
from tests.bombs import (
    chunked,
    deflated_instance,
    vm_hwm,
    zip_with_members,
    zip_with_zero_member,
)
from tests.conftest import LiveNode
from tests.factories import ct_instance, to_bytes

MiB = 1024**2
RSS_BOUND = 64 * MiB
BOMB_SIDE = 11586  # 2 * 11586**2 bytes of zero pixels: 256 MiB
LIMITS = {
    "PAIR_MAX_INFLATED_INSTANCE_BYTES": str(32 * MiB),
    "PAIR_MAX_INFLATED_REQUEST_BYTES": str(96 * MiB),
    "PAIR_MAX_ZIP_MEMBERS": "1000",
    "PAIR_MAX_DECODED_PIXEL_BYTES": str(16 * MiB),
    "PAIR_MAX_UPLOAD_BYTES": str(48 * MiB),
    "PAIR_INGEST_WORKERS": "0",  # one process: its memory is the node's
}
BOUNDARY = "bomb-boundary-7f3a"


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bombs")
    deflated = root / "deflated.dcm"
    deflated.write_bytes(deflated_instance(BOMB_SIDE))
    return {
        "deflated": deflated,
        "zip": zip_with_zero_member(root / "bomb.zip", 256 * MiB),
        "members": zip_with_members(root / "members.zip", 1001),
        "total": zip_with_members(root / "total.zip", 4, 30 * MiB),
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveNode]:
    root = tmp_path_factory.mktemp("live")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'pair.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
    live = LiveNode(root / "node", url)
    live.env_overrides.update(LIMITS)
    live.provision()
    live.start()
    yield live
    live.stop()


def _reset_peak(live: LiveNode) -> tuple[int, int]:
    """Reset the node's peak RSS; return (pid, current RSS)."""
    assert live.proc is not None
    pid = live.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return pid, vm_hwm(pid)


def _state(live: LiveNode) -> tuple[set[Path], set[Path], int]:
    """Stored and temporary files, and instance rows: a bomb must change none of them."""
    data = live.data_dir
    files = {p for d in ("storage", "quarantine") for p in (data / d).rglob("*") if p.is_file()}
    temp = set((data / "tmp").iterdir())
    node = open_node(settings=Settings(data_dir=data, database_url=live.database_url))
    try:
        with node.db.session() as s:
            rows = s.scalar(select(func.count()).select_from(Instance)) or 0
    finally:
        node.close()
    return files, temp, rows


def _related(parts: list[bytes]) -> tuple[bytes, dict[str, str]]:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    )
    ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return body + f"--{BOUNDARY}--\r\n".encode(), {"Content-Type": ctype}


def _form_head(filename: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()


def _form(path: Path) -> tuple[Iterator[bytes], dict[str, str]]:
    """A one-file upload body, sent chunked (no Content-Length), read from disk piecewise."""

    def body() -> Iterator[bytes]:
        yield _form_head(path.name)
        with path.open("rb") as fh:
            while piece := fh.read(MiB):
                yield piece
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return body(), {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def _error(r: httpx.Response, status: int, setting: str) -> None:
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert body["error"] == "limit_exceeded", body
    assert setting in body["message"], body


def test_stow_rs_bombs_are_refused(node: LiveNode, bombs: dict[str, Any]) -> None:
    url = node.base_url + "/dicomweb/studies"
    state = _state(node)
    pid, before = _reset_peak(node)
    body, headers = _related([bombs["deflated"].read_bytes()])
    r = httpx.post(url, content=body, headers={**headers, **node.headers()}, timeout=120)
    assert r.status_code == 409, r.text[:500]
    failed = r.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0xA700]
    assert "PAIR_MAX_INFLATED_INSTANCE_BYTES" in failed["00000902"]["Value"][0]

    # four deflated instances of 30 MiB each: each fits, together they pass the request's limit
    body, headers = _related([deflated_instance(3965)] * 4)
    r = httpx.post(url, content=body, headers={**headers, **node.headers()}, timeout=120)
    _error(r, 413, "PAIR_MAX_INFLATED_REQUEST_BYTES")
    assert vm_hwm(pid) - before < RSS_BOUND, (before, vm_hwm(pid))
    assert _state(node) == state

    body, headers = _related([deflated_instance(64)])  # a deflated instance within the limits
    r = httpx.post(url, content=body, headers={**headers, **node.headers()}, timeout=60)
    assert r.status_code == 200, r.text[:500]


def test_c_store_bomb_gets_a_failure_status(node: LiveNode, bombs: dict[str, Any]) -> None:
    from pynetdicom import AE, _config

    state = _state(node)
    pid, before = _reset_peak(node)
    ae = AE(ae_title=node.peer_ae)
    ae.add_requested_context(CTImageStorage, DeflatedExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    chunked_send = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes, not a decoded copy
    try:
        status = assoc.send_c_store(bombs["deflated"])
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked_send
        assoc.release()
    assert status.Status == 0xA700
    assert "PAIR_MAX_INFLATED" in str(status.ErrorComment)
    assert vm_hwm(pid) - before < RSS_BOUND, (before, vm_hwm(pid))
    assert _state(node) == state


def test_upload_bombs_are_refused_without_storing_anything(
    node: LiveNode, bombs: dict[str, Any]
) -> None:
    url = node.base_url + "/api/upload"
    state = _state(node)
    pid, before = _reset_peak(node)
    for bomb, setting in (
        ("zip", "PAIR_MAX_INFLATED_INSTANCE_BYTES"),
        ("members", "PAIR_MAX_ZIP_MEMBERS"),
        ("total", "PAIR_MAX_INFLATED_REQUEST_BYTES"),
    ):
        body, headers = _form(bombs[bomb])
        r = httpx.post(url, content=body, headers={**headers, **node.headers()}, timeout=120)
        _error(r, 413, setting)

    # 60 MiB without a Content-Length: refused once the body passes PAIR_MAX_UPLOAD_BYTES
    body_iter = chunked(60 * MiB, _form_head("big.dcm"), f"\r\n--{BOUNDARY}--\r\n".encode())
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **node.headers()}
    r = httpx.post(url, content=body_iter, headers=headers, timeout=120)
    assert "content-length" not in r.request.headers
    _error(r, 413, "PAIR_MAX_UPLOAD_BYTES")
    assert vm_hwm(pid) - before < RSS_BOUND, (before, vm_hwm(pid))
    assert _state(node) == state

    empty = f"--{BOUNDARY}--\r\n".encode()
    r = httpx.post(url, content=empty, headers=headers, timeout=30)
    assert r.status_code == 400 and "No files" in r.json()["message"]
    r = httpx.post(url, json={"files": []}, headers=node.headers(), timeout=30)
    assert r.status_code == 415, r.text

    # an ordinary zip still goes in, read from the streamed file
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
        zf.writestr("a/one.dcm", to_bytes(ds))
    r = httpx.post(
        url, files=[("files", ("ok.zip", buf.getvalue()))], headers=node.headers(), timeout=60
    )
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert _state(node)[1] == state[1]  # the streamed upload's temp file is gone


def test_rendering_decodes_one_frame_within_the_pixel_limit(node: LiveNode) -> None:
    """An 18 MB frame (stored deflated, 36 KiB sent) is past the 16 MiB decoded-pixel limit:
    422 for rendered, thumbnail and frames; nothing is decoded."""
    study = generate_uid()
    data = deflated_instance(3000, study_uid=study)
    body, headers = _related([data])
    r = httpx.post(
        node.base_url + "/dicomweb/studies",
        content=body,
        headers={**headers, **node.headers()},
        timeout=60,
    )
    assert r.status_code == 200, r.text[:500]
    stored = r.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
    pid, before = _reset_peak(node)
    for path in ("/rendered", "/frames/1/rendered", "/frames/1"):
        r = httpx.get(stored + path, headers=node.headers(), timeout=60)
        assert r.status_code == 422, (path, r.text[:300])
        assert "PAIR_MAX_DECODED_PIXEL_BYTES" in r.json()["message"]
    base = stored.split("/series/")[0]
    r = httpx.get(base + "/thumbnail", headers=node.headers(), timeout=60)
    assert r.status_code == 422 and "PAIR_MAX_DECODED_PIXEL_BYTES" in r.json()["message"]
    assert vm_hwm(pid) - before < RSS_BOUND, (before, vm_hwm(pid))


# ---- pair import ------------------------------------------------------------------------------


def _import(data: Path, path: Path) -> tuple[int, str, int]:
    """``pair import`` in its own process: (exit status, output, peak RSS in bytes)."""
    env = {**os.environ, **LIMITS, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pair", "import", "--data-dir", str(data), str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, output, usage.ru_maxrss * 1024


def test_import_bombs_exit_non_zero_with_bounded_memory(
    tmp_path: Path, bombs: dict[str, Any]
) -> None:
    base, data = tmp_path / "base", tmp_path / "node"
    for d in (base, data):
        result = CliRunner().invoke(app, ["facility", "create", "--data-dir", str(d), "Central"])
        assert result.exit_code == 0, result.output
    ok = tmp_path / "ok.zip"
    with zipfile.ZipFile(ok, "w") as zf:
        ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
        zf.writestr("one.dcm", to_bytes(ds))
    code, output, baseline = _import(base, ok)  # the same command on an ordinary zip
    assert code == 0 and "stored" in output, output

    for bomb, setting in (
        ("zip", "PAIR_MAX_INFLATED_INSTANCE_BYTES"),
        ("members", "PAIR_MAX_ZIP_MEMBERS"),
        ("total", "PAIR_MAX_INFLATED_REQUEST_BYTES"),
    ):
        code, output, peak = _import(data, bombs[bomb])
        assert code != 0, output
        assert setting in output.replace("\n", ""), output
        assert "Traceback" not in output
        assert peak - baseline < RSS_BOUND, (bomb, baseline, peak)
    node = open_node(data)
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0
        assert s.scalar(select(func.count()).select_from(ImportedFile)) == 0
    node.close()
    assert not [p for p in (data / "storage").rglob("*") if p.is_file()]


# ---- the measurement itself -------------------------------------------------------------------


def test_inflated_size_holds_one_step_at_a_time() -> None:
    import tracemalloc

    bomb = deflated_instance(BOMB_SIDE)
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded, match="PAIR_MAX_INFLATED_INSTANCE_BYTES"):
            inflated_size(bomb, 200 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB
    small = deflated_instance(64)
    ds = pydicom.dcmread(io.BytesIO(small))
    assert len(ds.PixelData) == 2 * 64 * 64
    assert inflated_size(small, 1 * MiB) > len(small)
    plain = to_bytes(ct_instance(study_uid=generate_uid(), series_uid=generate_uid()))
    assert inflated_size(plain, 1) == len(plain)  # not deflated: its own size, no limit


def test_default_limits() -> None:
    s = Settings()
    assert s.max_inflated_instance_bytes == 256 * MiB
    assert s.max_inflated_request_bytes == 4 * 1024**3
    assert s.max_decoded_pixel_bytes == 512 * MiB
    assert s.max_zip_members == 20_000
