"""What OHIF and older viewers need from a live node (issue 15, "Interoperability").

Opt-in CORS on /dicomweb, /wado and /api (preflight, headers on errors too, none on portal
pages, unknown origins refused); instance and frame thumbnails and the ``accept`` query
parameter (PS3.18 10.4.1.1, 8.3.3.1); frames with ``transfer-syntax=*`` sent as stored;
WADO-URI (PS3.18 chapter 9); absolute URLs from a trusted proxy's X-Forwarded-* headers.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import RLELossless, generate_uid

from tests.conftest import LiveNode
from tests.factories import ct_instance

pytestmark = pytest.mark.integration

VIEWER = "https://viewer.example.org"
JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG"


@pytest.fixture
def node(tmp_path: Path, database_url: str) -> Iterator[LiveNode]:
    server = LiveNode(tmp_path / "live", database_url)
    server.env_overrides["PAIR_CORS_ORIGINS"] = f"{VIEWER}, http://127.0.0.1:3000"
    server.provision()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stored(node: LiveNode) -> dict[str, Any]:
    study, series = generate_uid(), generate_uid()
    plain = ct_instance(study_uid=study, series_uid=series, index=1)
    rle = ct_instance(study_uid=study, series_uid=series, index=2)
    rle.compress(RLELossless)
    dw = DICOMwebClient(url=node.base_url + "/dicomweb", headers=node.headers())
    assert "FailedSOPSequence" not in dw.store_instances([plain, rle])
    ids = {}
    for item in dw.search_for_instances():
        ds = pydicom.Dataset.from_json(item)
        ids[int(ds.InstanceNumber)] = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return {"dw": dw, "plain": ids[1], "rle": ids[2], "rle_ds": rle}


def test_cors_preflight_and_headers_on_success_and_error(node: LiveNode) -> None:
    url = node.base_url + "/dicomweb/studies"
    pre = httpx.options(
        url,
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, accept",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == VIEWER
    allowed = pre.headers["access-control-allow-headers"].lower()
    assert {"authorization", "accept", "content-type"} <= {h.strip() for h in allowed.split(",")}
    assert "GET" in pre.headers["access-control-allow-methods"]

    ok = httpx.get(url, headers={**node.headers(), "Origin": VIEWER})
    assert ok.status_code in (200, 204)
    assert ok.headers["access-control-allow-origin"] == VIEWER
    exposed = ok.headers["access-control-expose-headers"]
    assert {"Warning", "Content-Type", "Content-Length"} <= {h.strip() for h in exposed.split(",")}
    assert "cookie" not in ok.headers.get("access-control-allow-credentials", "").lower()

    # errors carry the headers too, so the viewer can read the node's message
    denied = httpx.get(url, headers={"Origin": VIEWER})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == VIEWER
    missing = httpx.get(url + "/1.2.3.999", headers={**node.headers(), "Origin": VIEWER})
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == VIEWER
    api = httpx.get(node.base_url + "/api/cases", headers={"Origin": VIEWER})
    assert api.headers["access-control-allow-origin"] == VIEWER


def test_cors_refuses_unknown_origins_and_spares_portal_pages(node: LiveNode) -> None:
    url = node.base_url + "/dicomweb/studies"
    evil = "https://evil.example.net"
    pre = httpx.options(url, headers={"Origin": evil, "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    assert "PAIR_CORS_ORIGINS" in pre.text
    got = httpx.get(url, headers={**node.headers(), "Origin": evil})
    assert "access-control-allow-origin" not in got.headers
    odd = httpx.options(
        url,
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-custom",
        },
    )
    assert odd.status_code == 403 and "x-custom" in odd.text
    page = httpx.get(node.base_url + "/login", headers={"Origin": VIEWER})
    assert "access-control-allow-origin" not in page.headers


def test_thumbnails_at_every_level_and_accept_parameter(
    node: LiveNode, stored: dict[str, Any]
) -> None:
    study, series, sop = stored["plain"]
    base = f"{node.base_url}/dicomweb/studies/{study}"
    for path in (
        "/thumbnail",
        f"/series/{series}/thumbnail",
        f"/series/{series}/instances/{sop}/thumbnail",
        f"/series/{series}/instances/{sop}/frames/1/thumbnail",
    ):
        png = httpx.get(base + path, headers=node.headers())
        assert png.status_code == 200 and png.content.startswith(PNG_MAGIC), path
        jpeg = httpx.get(base + path, params={"accept": "image/jpeg"}, headers=node.headers())
        assert jpeg.headers["content-type"] == "image/jpeg", path
        assert jpeg.content.startswith(JPEG_MAGIC), path
        assert max(Image.open(io.BytesIO(jpeg.content)).size) <= 128
    # the query parameter wins over the header (PS3.18 8.3.3.1)
    rendered = f"{base}/series/{series}/instances/{sop}/rendered"
    r = httpx.get(
        rendered, params={"accept": "image/jpeg"}, headers={**node.headers(), "Accept": "image/png"}
    )
    assert r.headers["content-type"] == "image/jpeg"
    r = httpx.get(
        base + f"/series/{series}/instances/{sop}/frames/2/thumbnail", headers=node.headers()
    )
    assert r.status_code == 404
    # dicomweb-client's rendered retrieve (what a DICOMweb viewer library does) gets JPEG
    got = stored["dw"].retrieve_instance_rendered(study, series, sop, media_types=("image/jpeg",))
    assert got.startswith(JPEG_MAGIC)


def test_frames_transfer_syntax_star_sends_frames_as_stored(
    node: LiveNode, stored: dict[str, Any]
) -> None:
    study, series, sop = stored["rle"]
    url = f"{node.base_url}/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
    star = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    r = httpx.get(url, headers={**node.headers(), "Accept": star})
    assert r.status_code == 200
    assert f"transfer-syntax={RLELossless}" in r.headers["content-type"]
    rle = stored["rle_ds"]
    encoded = next(iter(generate_frames(rle.PixelData, number_of_frames=1)))
    assert encoded in r.content
    explicit = (
        'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    )
    r = httpx.get(url, headers={**node.headers(), "Accept": explicit})
    assert (
        r.status_code == 200 and "transfer-syntax=1.2.840.10008.1.2.1" in r.headers["content-type"]
    )
    assert rle.pixel_array.tobytes() in r.content
    other = (
        'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.90'
    )
    r = httpx.get(url, headers={**node.headers(), "Accept": other})
    assert r.status_code == 406 and "offered as" in r.json()["message"]


def test_wado_uri(node: LiveNode, stored: dict[str, Any]) -> None:
    study, series, sop = stored["plain"]
    url = node.base_url + "/wado"
    q = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    jpeg = httpx.get(url, params=q, headers=node.headers())
    assert jpeg.status_code == 200 and jpeg.content.startswith(JPEG_MAGIC)  # default image/jpeg
    png = httpx.get(
        url, params={**q, "contentType": "image/png", "rows": 16}, headers=node.headers()
    )
    assert png.content.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(png.content)).size == (16, 16)
    dcm = httpx.get(url, params={**q, "contentType": "application/dicom"}, headers=node.headers())
    assert dcm.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(dcm.content))
    assert ds.SOPInstanceUID == sop
    study2, series2, sop2 = stored["rle"]
    q2 = {"requestType": "WADO", "studyUID": study2, "seriesUID": series2, "objectUID": sop2}
    decoded = httpx.get(
        url,
        params={**q2, "contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.1"},
        headers=node.headers(),
    )
    assert (
        pydicom.dcmread(io.BytesIO(decoded.content)).file_meta.TransferSyntaxUID
        == "1.2.840.10008.1.2.1"
    )
    # precise refusals
    assert (
        httpx.get(url, params={**q, "requestType": "X"}, headers=node.headers()).status_code == 400
    )
    no_obj = {k: v for k, v in q.items() if k != "objectUID"}
    assert httpx.get(url, params=no_obj, headers=node.headers()).status_code == 422
    region = httpx.get(url, params={**q, "region": "0,0,1,1"}, headers=node.headers())
    assert region.status_code == 400 and "region" in region.json()["message"]
    gif = httpx.get(url, params={**q, "contentType": "image/gif"}, headers=node.headers())
    assert gif.status_code == 406
    # another facility's object is answered like a missing one; no token is a 401
    assert httpx.get(url, params=q, headers=node.headers("rad_b")).status_code == 404
    assert httpx.get(url, params=q).status_code == 401


def test_forwarded_headers_from_the_trusted_proxy_only(
    node: LiveNode, stored: dict[str, Any]
) -> None:
    study, _, _ = stored["plain"]
    url = f"{node.base_url}/dicomweb/studies?StudyInstanceUID={study}"
    proxied = {
        **node.headers(),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "pacs.hospital.example",
        "X-Forwarded-Prefix": "/pair",
    }
    r = httpx.get(url, headers=proxied)  # the test client is 127.0.0.1: a trusted proxy
    retrieve_url = r.json()[0]["00081190"]["Value"][0]
    assert retrieve_url == f"https://pacs.hospital.example/pair/dicomweb/studies/{study}"
    bad = httpx.get(url, headers={**proxied, "X-Forwarded-Host": "evil/x"})
    assert bad.json()[0]["00081190"]["Value"][0].startswith("https://127.0.0.1")
