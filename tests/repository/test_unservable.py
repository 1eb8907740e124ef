"""Serve what can be served (issue 11): an instance stored before the well-formedness rules,
with an undecodable element and a nonsensical pixel module, must not make its study's
metadata fail, and its pixels answer a clear 422, never a 500."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from pair.core.node import Node
from pair.repository.ingest import content_store
from pair.repository.models import Instance
from tests.conftest import admin_test_client
from tests.security.fuzz_corpus import _elem, base_dataset, encode, set_value

BOUNDARY = "unservable-boundary"


def _stow(parts: list[bytes]) -> tuple[bytes, dict[str, str]]:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body = b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()
    ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return body, {"Content-Type": ctype}


def test_a_legacy_bad_instance_leaves_its_study_servable(node: Node) -> None:
    client, headers = admin_test_client(node)
    h = headers["dm"]
    good, bad = base_dataset(1), base_dataset(2)
    bad.StudyInstanceUID = good.StudyInstanceUID
    body, ctype = _stow([encode(good), encode(bad)])
    r = client.post("/dicomweb/studies", content=body, headers={**h, **ctype})
    assert r.status_code == 200, r.text
    urls = [i["00081190"]["Value"][0] for i in r.json()["00081199"]["Value"]]
    bad_sop = urls[1].rsplit("/", 1)[1]

    # what an older node accepted: InstanceNumber 'abc', BitsAllocated 13
    with node.db.session() as s:
        row = s.scalar(select(Instance).where(Instance.sop_instance_uid == bad_sop))
        assert row is not None
        path = content_store(node).path(row.storage_path)
    data = path.read_bytes()
    data = set_value(data, 0x0020, 0x0013, b"IS", b"abc ")
    data = set_value(data, 0x0028, 0x0100, b"US", (13).to_bytes(2, "little"))
    assert _elem(0x0020, 0x0013, b"IS", b"abc ") in data
    path.chmod(0o644)
    path.write_bytes(data)

    study = urls[0].split("/series/")[0].split("/dicomweb", 1)[1]
    meta = client.get(f"/dicomweb{study}/metadata", headers=h)
    assert meta.status_code == 200, meta.text
    by_sop: dict[str, dict[str, Any]] = {m["00080018"]["Value"][0]: m for m in meta.json()}
    assert len(by_sop) == 2
    assert by_sop[bad_sop]["00200013"] == {"vr": "IS"}  # the one bad element: VR only
    assert by_sop[bad_sop]["00280100"]["Value"] == [13]  # stored as it is
    good_sop = urls[0].rsplit("/", 1)[1]
    assert by_sop[good_sop]["00200013"]["Value"] == [123]

    bad_url = urls[1].split("/dicomweb", 1)[1]
    for suffix, accept in (
        ("/frames/1", 'multipart/related; type="application/octet-stream"'),
        ("/rendered", "image/png"),
    ):
        res = client.get(f"/dicomweb{bad_url}{suffix}", headers={**h, "Accept": accept})
        assert res.status_code == 422, (suffix, res.text)
        assert res.json()["error"] == "pixel_data_unreadable"
    whole = client.get(
        f"/dicomweb{bad_url}",
        headers={**h, "Accept": 'multipart/related; type="application/dicom"'},
    )
    assert whole.status_code == 200  # the stored file itself is served as stored
    assert data in whole.content
