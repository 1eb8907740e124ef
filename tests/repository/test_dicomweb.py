"""DICOMweb against a live `pair serve`, driven by dicomweb-client (and httpx for edge cases)."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.uid import generate_uid

from tests.conftest import LiveNode
from tests.factories import FAKE_PATIENT, ct_instance, to_bytes

pytestmark = pytest.mark.integration


def client(live: LiveNode, user: str = "dm_a") -> DICOMwebClient:
    return DICOMwebClient(url=live.base_url + "/dicomweb", headers=live.headers(user))


def _phi_free(obj: object) -> None:
    text = str(obj)
    for value in (
        "MRN0042424",
        "DOE",
        "JOHNATHAN",
        "19570312",
        "Elm Street",
        "ACC9900123",
        "HOUSE",
        "Springfield",
    ):
        assert value not in text, f"PHI {value!r} leaked"


def test_stow_qido_wado_roundtrip(live: LiveNode) -> None:
    study, series = generate_uid(), generate_uid()
    originals = [ct_instance(study_uid=study, series_uid=series, index=i) for i in (1, 2, 3)]
    other = ct_instance(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        study_date="20200601",
        patient={"PatientID": "MRN777", "PatientName": "ROE^RICHARD"},
    )
    dw = client(live)
    resp = dw.store_instances([*originals, other])
    assert len(resp.ReferencedSOPSequence) == 4
    assert "FailedSOPSequence" not in resp

    studies = dw.search_for_studies()
    assert len(studies) == 2
    _phi_free(studies)
    first = pydicom.Dataset.from_json(studies[0])
    assert first.PatientID.startswith("HOSPA-")
    # the stored study UID is the keyed remap, not the original
    uids = {pydicom.Dataset.from_json(s).StudyInstanceUID for s in studies}
    assert study not in uids

    # matching: modality, date ranges, wildcards, limit/offset, includefield
    assert len(dw.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})) == 2
    assert dw.search_for_studies(search_filters={"ModalitiesInStudy": "MR"}) == []
    # dates are shifted per patient, so query the stored value back as an exact and a range match
    dated = [pydicom.Dataset.from_json(s) for s in studies]
    d0 = dated[0].StudyDate
    assert len(dw.search_for_studies(search_filters={"StudyDate": d0})) >= 1
    assert len(dw.search_for_studies(search_filters={"StudyDate": f"{d0}-"})) >= 1
    assert len(dw.search_for_studies(search_filters={"StudyDate": "-19000101"})) == 0
    assert len(dw.search_for_studies(search_filters={"PatientID": "HOSPA-*"})) == 2
    assert len(dw.search_for_studies(search_filters={"PatientID": dated[0].PatientID})) == 1
    assert len(dw.search_for_studies(limit=1)) == 1
    assert len(dw.search_for_studies(limit=1, offset=1)) == 1
    assert dw.search_for_studies(offset=2) == []

    stored_study = next(d for d in dated if d.NumberOfStudyRelatedInstances == 3)
    suid = stored_study.StudyInstanceUID
    series_list = dw.search_for_series(suid)
    assert len(series_list) == 1
    se = pydicom.Dataset.from_json(series_list[0])
    assert se.Modality == "CT" and se.NumberOfSeriesRelatedInstances == 3
    instances = dw.search_for_instances(suid, se.SeriesInstanceUID, fields=["PixelSpacing"])
    assert len(instances) == 3
    assert "00280030" in instances[0]
    assert len(dw.search_for_instances(search_filters={"Modality": "CT"})) == 4
    assert len(dw.search_for_series(search_filters={"Modality": "CT"})) == 2

    # WADO-RS retrieve: pixel data unchanged, header de-identified
    retrieved = dw.retrieve_study(suid)
    assert len(retrieved) == 3
    by_number = {int(d.InstanceNumber): d for d in retrieved}
    for orig in originals:
        got = by_number[int(orig.InstanceNumber)]
        assert got.PixelData == orig.PixelData
        assert got.PatientID.startswith("HOSPA-")
        _phi_free(got)
    sop = by_number[1].SOPInstanceUID
    meta = dw.retrieve_instance_metadata(suid, se.SeriesInstanceUID, sop)
    assert "BulkDataURI" in meta["7FE00010"]
    _phi_free(meta)
    frames = dw.retrieve_instance_frames(suid, se.SeriesInstanceUID, sop, frame_numbers=[1])
    assert frames[0] == originals[0].PixelData
    png = dw.retrieve_instance_rendered(suid, se.SeriesInstanceUID, sop, media_types=("image/png",))
    img = Image.open(io.BytesIO(png))
    assert img.size == (32, 32)
    url = (
        f"{live.base_url}/dicomweb/studies/{suid}/series/{se.SeriesInstanceUID}/instances/"
        f"{sop}/rendered?window=0,100&viewport=16,16"
    )
    r = httpx.get(url, headers={**live.headers(), "Accept": "image/jpeg"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (16, 16)
    # 16-bit CT with a sigmoid VOI (PS3.3 C.11.2.1.3.1): every pixel as the standard computes it
    sigmoid = url.replace("window=0,100&viewport=16,16", "window=-600,1500,sigmoid")
    r = httpx.get(sigmoid, headers={**live.headers(), "Accept": "image/png"})
    hu = originals[0].pixel_array.astype(np.float64)
    want = np.rint(255 / (1 + np.exp(-4 * (hu + 600) / 1500)))
    assert (np.asarray(Image.open(io.BytesIO(r.content))) == want).all()
    r = httpx.get(url, headers={**live.headers(), "Accept": "image/gif"})
    assert r.status_code == 406
    r = httpx.get(sigmoid.replace("sigmoid", "cubic"), headers=live.headers())
    assert r.status_code == 400 and "cubic" in r.json()["message"]

    # re-sending the same instances is idempotent
    again = dw.store_instances(originals)
    assert len(again.ReferencedSOPSequence) == 3
    assert (
        pydicom.Dataset.from_json(
            dw.search_for_studies(search_filters={"StudyInstanceUID": suid})[0]
        ).NumberOfStudyRelatedInstances
        == 3
    )

    # facility isolation and roles
    assert client(live, "rad_b").search_for_studies() == []
    r = httpx.get(
        f"{live.base_url}/dicomweb/studies/{suid}/metadata", headers=live.headers("rad_b")
    )
    assert r.status_code == 404
    assert len(client(live, "rad_a").search_for_studies()) == 2


def test_stow_errors_and_auth(live: LiveNode) -> None:
    url = live.base_url + "/dicomweb/studies"
    good = to_bytes(ct_instance(study_uid=generate_uid(), series_uid=generate_uid()))
    truncated = good[:-300]

    def multipart(*parts: bytes) -> tuple[bytes, str]:
        b = "testboundary42"
        body = (
            b"".join(
                b"--" + b.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                for p in parts
            )
            + b"--"
            + b.encode()
            + b"--\r\n"
        )
        return body, f'multipart/related; type="application/dicom"; boundary={b}'

    body, ctype = multipart(good, b"not a dicom file at all" * 20, truncated)
    r = httpx.post(url, content=body, headers={**live.headers(), "Content-Type": ctype})
    assert r.status_code == 202
    doc = r.json()
    failed = doc["00081198"]["Value"]
    assert len(failed) == 2 and len(doc["00081199"]["Value"]) == 1
    reasons = sorted(f["00000902"]["Value"][0] for f in failed)
    assert any("Not DICOM" in m for m in reasons)
    assert any("Truncated Pixel Data" in m for m in reasons)
    assert all(f["00081197"]["Value"][0] == 0xC000 for f in failed)

    body, ctype = multipart(b"garbage" * 40)
    r = httpx.post(url, content=body, headers={**live.headers(), "Content-Type": ctype})
    assert r.status_code == 409

    body, ctype = multipart(good)
    r = httpx.post(
        url + "/1.2.3.4", content=body, headers={**live.headers(), "Content-Type": ctype}
    )
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"][0] == 0xA900

    r = httpx.post(
        url, content=good, headers={**live.headers(), "Content-Type": "application/json"}
    )
    assert r.status_code == 415
    r = httpx.post(url, content=body, headers={"Content-Type": ctype})
    assert r.status_code == 401
    r = httpx.post(
        url, content=body, headers={"Authorization": "Bearer nope", "Content-Type": ctype}
    )
    assert r.status_code == 401
    r = httpx.post(url, content=body, headers={**live.headers("rad_a"), "Content-Type": ctype})
    assert r.status_code == 403
    r = httpx.get(live.base_url + "/dicomweb/studies?NoSuchKeyword=1", headers=live.headers())
    assert r.status_code == 400 and "NoSuchKeyword" in r.json()["message"]
    r = httpx.get(live.base_url + "/dicomweb/studies?StudyDate=2020-13", headers=live.headers())
    assert r.status_code == 400
    r = httpx.get(live.base_url + "/dicomweb/studies?limit=-1", headers=live.headers())
    assert r.status_code == 400
    r = httpx.get(live.base_url + "/dicomweb/studies/1.2.3/metadata", headers=live.headers())
    assert r.status_code == 404
    # nothing but the one good instance was stored
    found = httpx.get(url, headers=live.headers()).json()
    assert len(found) == 1
    assert "openapi" in httpx.get(live.base_url + "/openapi.json").json()


def test_stow_rejects_oversized_request(live: LiveNode) -> None:
    limit_env = 2048
    live.stop()
    live.env_overrides = {"PAIR_MAX_UPLOAD_BYTES": str(limit_env)}
    live.start()
    good = to_bytes(ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=64))
    ctype = 'multipart/related; type="application/dicom"; boundary=b1'
    body = b"--b1\r\nContent-Type: application/dicom\r\n\r\n" + good + b"\r\n--b1--\r\n"
    r = httpx.post(
        live.base_url + "/dicomweb/studies",
        content=body,
        headers={**live.headers(), "Content-Type": ctype},
    )
    assert r.status_code == 413
    assert httpx.get(live.base_url + "/dicomweb/studies", headers=live.headers()).status_code == 204
    # no half-written file anywhere the node stores, stages or quarantines data
    left = [
        p
        for d in ("storage", "tmp", "quarantine")
        for p in (live.data_dir / d).rglob("*")
        if p.is_file()
    ]
    assert left == []
    # and the refused upload's patient identifiers are not in the server's log
    log = live.log_path.read_text(errors="replace")
    assert "Uvicorn running on" in log  # the restarted server's own log
    for key in ("PatientName", "PatientID", "PatientBirthDate"):
        assert str(FAKE_PATIENT[key]) not in log


def test_stow_to_one_study_takes_its_instances_and_refuses_others(live: LiveNode) -> None:
    """`POST /studies/{study}` through dicomweb-client: the URL names the sender's study."""
    study, series = generate_uid(), generate_uid()
    mine = [ct_instance(study_uid=study, series_uid=series, index=i) for i in (1, 2)]
    stranger = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    dw = client(live)
    resp = dw.store_instances([*mine, stranger], study_instance_uid=study)
    assert len(resp.ReferencedSOPSequence) == 2
    (failed,) = resp.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == stranger.SOPInstanceUID
    assert failed.FailureReason == 0xA900
    (stored,) = dw.search_for_studies()
    assert pydicom.Dataset.from_json(stored).NumberOfStudyRelatedInstances == 2
