"""WADO-RS (PS3.18 §10.4) on a live `pair serve`, driven by dicomweb-client and httpx.

Study, series and instance retrieve with transfer-syntax negotiation, metadata at every level,
frames (lists, multi-frame, native compressed or decoded) and bulk data.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    RLELossless,
    generate_uid,
)

from tests.conftest import LiveNode
from tests.factories import ct_instance

pytestmark = pytest.mark.integration

FRAMES = 4


def multiframe(study: str, series: str) -> Dataset:
    """A 4-frame 16-bit secondary capture whose frames differ (frame n is filled with n)."""
    ds = ct_instance(study_uid=study, series_uid=series, index=9, size=16)
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "OT"
    ds.NumberOfFrames = FRAMES
    ds.PixelRepresentation = 0
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 100
    for k in ("RescaleIntercept", "RescaleSlope", "ImagePositionPatient"):
        del ds[k]
    frames = np.stack([np.full((16, 16), 100 * n, dtype=np.uint16) for n in range(1, FRAMES + 1)])
    frames[:, 0, :] = np.arange(16, dtype=np.uint16)  # a gradient so that RLE has work to do
    ds.PixelData = frames.tobytes()
    return ds


def _ids(ds: dict[str, Any]) -> tuple[str, str, str]:
    return tuple(ds[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))  # type: ignore[return-value]


@pytest.fixture
def stored(live: LiveNode) -> dict[str, Any]:
    study = generate_uid()
    ct_series, mf_series, rle_series = generate_uid(), generate_uid(), generate_uid()
    cts = [ct_instance(study_uid=study, series_uid=ct_series, index=i) for i in (1, 2)]
    mf = multiframe(study, mf_series)
    rle = multiframe(study, rle_series)
    rle.SOPInstanceUID = rle.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    rle.InstanceNumber = 10
    rle.compress(RLELossless)
    dw = DICOMwebClient(url=live.base_url + "/dicomweb", headers=live.headers())
    resp = dw.store_instances([*cts, mf, rle])
    assert "FailedSOPSequence" not in resp, resp
    found: dict[str, list[tuple[str, str, str]]] = {}
    for item in dw.search_for_instances():
        ident = pydicom.Dataset.from_json(item)
        key = {1: "ct", 2: "ct", 9: "mf", 10: "rle"}[int(ident.InstanceNumber)]
        found.setdefault(key, []).append(_ids(item))
    assert len(found["ct"]) == 2 and len(found["mf"]) == 1 and len(found["rle"]) == 1
    return {"dw": dw, "study": found["ct"][0][0], "ct": found["ct"], "mf": found["mf"][0],
            "rle": found["rle"][0], "originals": {"ct": cts, "mf": mf, "rle": rle}}  # fmt: skip


def test_study_series_instance_retrieve(live: LiveNode, stored: dict[str, Any]) -> None:
    dw: DICOMwebClient = stored["dw"]
    study, ct_series, sop = stored["ct"][0]
    assert len(dw.retrieve_study(study)) == 4
    series = dw.retrieve_series(study, ct_series)
    assert sorted(int(d.InstanceNumber) for d in series) == [1, 2]
    one = dw.retrieve_instance(study, ct_series, sop)
    assert one.SOPInstanceUID == sop
    r = httpx.get(
        f"{live.base_url}/dicomweb/studies/{study}/series/{ct_series}", headers=live.headers()
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("multipart/related")
    assert 'type="application/dicom"' in r.headers["content-type"]
    for path in (f"{study}/series/1.2.3", f"{study}/series/{ct_series}/instances/1.2.3"):
        r = httpx.get(f"{live.base_url}/dicomweb/studies/{path}", headers=live.headers())
        assert r.status_code == 404


def test_transfer_syntax_negotiation(live: LiveNode, stored: dict[str, Any]) -> None:
    dw: DICOMwebClient = stored["dw"]
    study, series, sop = stored["rle"]
    as_stored = dw.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))
    assert as_stored.file_meta.TransferSyntaxUID == RLELossless
    plain = dw.retrieve_instance(
        study, series, sop, media_types=(("application/dicom", ExplicitVRLittleEndian),)
    )
    assert plain.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = stored["originals"]["mf"]
    assert np.array_equal(plain.pixel_array, original.pixel_array)
    assert np.array_equal(as_stored.pixel_array, original.pixel_array)
    # a syntax the server cannot produce: 406, with what it can offer
    url = f"{live.base_url}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={JPEG2000Lossless}'
    r = httpx.get(url, headers={**live.headers(), "Accept": accept})
    assert r.status_code == 406 and ExplicitVRLittleEndian in r.json()["message"]
    r = httpx.get(url, headers={**live.headers(), "Accept": "application/json"})
    assert r.status_code == 406


def test_metadata_at_every_level(live: LiveNode, stored: dict[str, Any]) -> None:
    dw: DICOMwebClient = stored["dw"]
    study, ct_series, sop = stored["ct"][0]
    whole = dw.retrieve_study_metadata(study)
    assert len(whole) == 4
    assert {m["0020000D"]["Value"][0] for m in whole} == {study}
    series = dw.retrieve_series_metadata(study, ct_series)
    assert sorted(m["00200013"]["Value"][0] for m in series) == [1, 2]
    one = dw.retrieve_instance_metadata(study, ct_series, sop)
    assert one["00080018"]["Value"][0] == sop
    assert one["00100010"]["Value"][0].keys() == {"Alphabetic"}  # PN in the JSON model
    assert one["00280010"] == {"vr": "US", "Value": [32]}
    assert "InlineBinary" not in str(one) and "BulkDataURI" in one["7FE00010"]
    r = httpx.get(f"{live.base_url}/dicomweb/studies/{study}/metadata", headers=live.headers())
    assert r.headers["content-type"].startswith("application/dicom+json")


def test_bulkdata_from_metadata_uri(live: LiveNode, stored: dict[str, Any]) -> None:
    dw: DICOMwebClient = stored["dw"]
    study, series, sop = stored["mf"]
    # (httpx, not dicomweb-client: the latter sends "Host" without the port on non-streamed
    # requests, and the server builds its URIs from the Host it is given)
    url = f"{live.base_url}/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata"
    (meta,) = httpx.get(url, headers=live.headers()).json()
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri.startswith(live.base_url + "/dicomweb/studies/")
    assert uri.endswith(f"/instances/{sop}/bulkdata/7FE00010")
    (data,) = dw.retrieve_bulkdata(uri)
    assert data == stored["originals"]["mf"].PixelData
    base = uri.rsplit("/", 1)[0]
    assert httpx.get(base + "/00100010", headers=live.headers()).status_code == 404
    assert httpx.get(base + "/zz", headers=live.headers()).status_code == 400
    assert httpx.get(base + "/00181063", headers=live.headers()).status_code == 404


def test_frames_lists_multiframe_and_compressed(live: LiveNode, stored: dict[str, Any]) -> None:
    dw: DICOMwebClient = stored["dw"]
    original = stored["originals"]["mf"].pixel_array
    study, series, sop = stored["mf"]
    got = dw.retrieve_instance_frames(study, series, sop, frame_numbers=[3, 1, 4])
    assert [bytes(g) for g in got] == [original[n - 1].tobytes() for n in (3, 1, 4)]

    # compressed: decoded when octet-stream is asked for, native RLE frames when RLE is
    study, series, sop = stored["rle"]
    decoded = dw.retrieve_instance_frames(study, series, sop, frame_numbers=[2, 4])
    assert [bytes(g) for g in decoded] == [original[n - 1].tobytes() for n in (2, 4)]
    native = dw.retrieve_instance_frames(
        study, series, sop, frame_numbers=[2], media_types=("image/x-dicom-rle",)
    )
    rle = stored["originals"]["rle"]
    encoded = list(generate_frames(rle.PixelData, number_of_frames=FRAMES))
    assert bytes(native[0]) == encoded[1]

    url = f"{live.base_url}/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/"
    r = httpx.get(url + "2", headers={**live.headers(), "Accept": "image/jp2"})
    assert r.status_code == 406
    r = httpx.get(url + "5", headers=live.headers())
    assert r.status_code == 404 and "4 frame" in r.json()["message"]
    for bad in ("0", "1,x", "-1"):
        assert httpx.get(url + bad, headers=live.headers()).status_code == 400, bad
