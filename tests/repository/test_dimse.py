"""DIMSE against a live `pair serve`: dcmtk echoscu/storescu/findscu and pynetdicom as clients."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLossless,
    JPEGLosslessSV1,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind

from tests.conftest import LiveNode, c_find
from tests.factories import INGEST_TRANSFER_SYNTAXES, ct_instance, write_series

pytestmark = pytest.mark.integration


def dcmtk(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert shutil.which(args[0]), f"{args[0]} (dcmtk) is not installed"
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, cwd=cwd)


def test_dcmtk_echo_store_find(live: LiveNode, tmp_path: Path, shared_data: Path) -> None:
    port = str(live.dicom_port)
    ok = dcmtk("echoscu", "-aet", live.peer_ae, "-aec", live.ae_title, "127.0.0.1", port)
    assert ok.returncode == 0, ok.stderr
    refused = dcmtk("echoscu", "-aet", "STRANGER", "-aec", live.ae_title, "127.0.0.1", port)
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr + refused.stdout

    files = write_series(tmp_path / "series", n=3)
    jpeg = shared_data / "dicom" / "txv_siim_cr_chest_pa.dcm"  # JPEG baseline CR
    dx = shared_data / "dicom" / "highdicom_dx_image.dcm"  # MONOCHROME1 DX
    sent = dcmtk(
        "storescu",
        "-aet",
        live.peer_ae,
        "-aec",
        live.ae_title,
        "127.0.0.1",
        port,
        *map(str, files),
        str(dx),
    )
    assert sent.returncode == 0, sent.stderr
    # -xy: propose JPEG baseline (8-bit lossy), the stored syntax of the CR file
    sent = dcmtk(
        "storescu", "-xy", "-aet", live.peer_ae, "-aec", live.ae_title, "127.0.0.1", port, str(jpeg)
    )
    assert sent.returncode == 0, sent.stderr

    r = httpx.get(live.base_url + "/dicomweb/studies", headers=live.headers())
    studies = r.json()
    assert len(studies) == 3
    jpeg_uid = [s for s in studies if "CR" in s["00080061"].get("Value", [])]
    assert jpeg_uid, "CR study missing"

    out = tmp_path / "find"
    out.mkdir()
    found = dcmtk(
        "findscu",
        "-S",
        "-X",
        "-aet",
        live.peer_ae,
        "-aec",
        live.ae_title,
        "127.0.0.1",
        port,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID",
        "-k",
        "StudyInstanceUID",
        "-k",
        "ModalitiesInStudy=CT",
        "-k",
        "StudyDate",
        cwd=out,
    )
    assert found.returncode == 0, found.stderr
    responses = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert len(responses) == 1
    assert responses[0].PatientID.startswith("HOSPA-")
    assert "MRN" not in str(responses[0])

    series_out = tmp_path / "find2"
    series_out.mkdir()
    found = dcmtk(
        "findscu",
        "-S",
        "-X",
        "-aet",
        live.peer_ae,
        "-aec",
        live.ae_title,
        "127.0.0.1",
        port,
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        "Modality=DX",
        "-k",
        "SeriesInstanceUID",
        "-k",
        "StudyInstanceUID",
        cwd=series_out,
    )
    assert found.returncode == 0, found.stderr
    assert len(list(series_out.glob("rsp*.dcm"))) == 1


def _send(live: LiveNode, datasets: list[pydicom.Dataset], ts: str) -> list[int]:
    ae = AE(ae_title=live.peer_ae)
    ae.add_requested_context(CTImageStorage, ts)
    assoc = ae.associate("127.0.0.1", live.dicom_port, ae_title=live.ae_title)
    assert assoc.is_established
    statuses = []
    for ds in datasets:
        status = assoc.send_c_store(ds)
        statuses.append(int(status.Status))
    assoc.release()
    return statuses


@pytest.mark.parametrize("ts", INGEST_TRANSFER_SYNTAXES)
def test_pynetdicom_store_transfer_syntaxes(live: LiveNode, ts: str) -> None:
    study, series = generate_uid(), generate_uid()
    datasets = []
    for i in (1, 2):
        ds = ct_instance(study_uid=study, series_uid=series, index=i, size=64)
        if pydicom.uid.UID(ts).is_compressed:
            ds.compress(ts)
        else:
            ds.file_meta.TransferSyntaxUID = ts
        datasets.append(ds)
    assert _send(live, datasets, ts) == [0, 0]
    dw = httpx.get(live.base_url + "/dicomweb/instances", headers=live.headers()).json()
    assert len(dw) == 2

    ae = AE(ae_title=live.peer_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", live.dicom_port, ae_title=live.ae_title)
    _, results = c_find(
        assoc, QueryRetrieveLevel="IMAGE", SOPInstanceUID="", InstanceNumber="", Modality="CT"
    )
    assoc.release()
    assert sorted(int(r.InstanceNumber) for r in results) == [1, 2]


def test_pynetdicom_bad_instance_gets_failure_status(live: LiveNode) -> None:
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    ds.SeriesInstanceUID = ds.StudyInstanceUID
    assert _send(live, [ds], ExplicitVRLittleEndian) == [0xC000]


@pytest.mark.parametrize(("ts", "dcmcjpeg_mode"), [(JPEGLosslessSV1, "+e1"), (JPEGLossless, "+el")])
def test_jpeg_lossless_store_keeps_pixels(
    live: LiveNode, tmp_path: Path, ts: str, dcmcjpeg_mode: str
) -> None:
    """JPEG lossless (process 14, and its selection value 1), encoded by dcmtk's dcmcjpeg."""
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=64)
    plain, packed = tmp_path / "plain.dcm", tmp_path / "jpeg.dcm"
    ds.save_as(plain, enforce_file_format=True)
    encoded = dcmtk("dcmcjpeg", dcmcjpeg_mode, str(plain), str(packed))
    assert encoded.returncode == 0, encoded.stderr
    compressed = pydicom.dcmread(packed)
    assert compressed.file_meta.TransferSyntaxUID == ts

    if ts == JPEGLosslessSV1:  # storescu's -xs proposes exactly this syntax
        sent = dcmtk(
            "storescu", "-xs", "-aet", live.peer_ae, "-aec", live.ae_title,
            "127.0.0.1", str(live.dicom_port), str(packed),
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    else:
        assert _send(live, [compressed], ts) == [0]

    web = DICOMwebClient(url=live.base_url + "/dicomweb", headers=live.headers())
    (found,) = web.search_for_instances()
    uids = [found[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018")]
    assert uids[2] != ds.SOPInstanceUID  # de-identified on the way in
    stored = web.retrieve_instance(*uids, media_types=(("application/dicom", ts),))
    assert stored.file_meta.TransferSyntaxUID == ts
    assert (stored.pixel_array == ds.pixel_array).all()  # lossless end to end
    assert "DOE" not in str(stored.PatientName)
