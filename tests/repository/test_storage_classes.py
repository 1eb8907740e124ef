"""C-STORE of every storage SOP class issue 2 names (CT, CR, DX, MR, SC, SR, SEG) with dcmtk.

The segmentation is built with highdicom on the CT series it segments, so the test also checks
that de-identification remaps the SEG's references to the same UIDs as the CT it points to.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    CTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    generate_uid,
)

from tests.conftest import LiveNode
from tests.factories import ct_instance
from tests.repository.test_dimse import dcmtk

pytestmark = pytest.mark.integration


def _mr(study: str) -> Dataset:
    ds = ct_instance(study_uid=study, series_uid=generate_uid(), modality="MR", size=32)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SeriesDescription = "AX T2 HASTE"
    del ds.RescaleIntercept, ds.RescaleSlope
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(32 * 32, dtype=np.uint16).tobytes()
    return ds


def _secondary_capture(study: str) -> Dataset:
    ds = ct_instance(study_uid=study, series_uid=generate_uid(), modality="OT", size=32)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.ConversionType = "WSD"
    for keyword in ("RescaleIntercept", "RescaleSlope", "ImagePositionPatient"):
        delattr(ds, keyword)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.zeros((32, 32), dtype=np.uint8).tobytes()
    return ds


def _segmentation(ct: list[Dataset]) -> Dataset:
    mask = np.zeros((len(ct), 32, 32), dtype=bool)
    mask[:, 8:24, 8:24] = True
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Ground-glass opacity",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lung,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    return hd.seg.Segmentation(
        source_images=ct,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=90,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="PAIR tests",
        manufacturer_model_name="manual",
        software_versions="1",
        device_serial_number="0",
    )


def test_storescu_stores_every_named_storage_class(
    live: LiveNode, tmp_path: Path, shared_data: Path
) -> None:
    study = generate_uid()
    ct_series = generate_uid()
    ct = [ct_instance(study_uid=study, series_uid=ct_series, index=i) for i in (1, 2, 3)]
    for ds in ct:
        ds.SliceThickness = 1.0
    made = [*ct, _mr(study), _secondary_capture(study), _segmentation(ct)]
    files = []
    for n, ds in enumerate(made):
        path = tmp_path / f"made{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    shared = [
        shared_data / "dicom" / name
        for name in ("highdicom_sr_document.dcm", "highdicom_dx_image.dcm")
    ]
    # -R: propose only the classes of the files sent (storescu's default list lacks SEG)
    sent = dcmtk(
        "storescu", "-R", "-aet", live.peer_ae, "-aec", live.ae_title, "127.0.0.1",
        str(live.dicom_port), *files, *map(str, shared),
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    cr = shared_data / "dicom" / "txv_siim_cr_chest_pa.dcm"  # JPEG baseline: propose it
    sent = dcmtk(
        "storescu", "-xy", "-aet", live.peer_ae, "-aec", live.ae_title, "127.0.0.1",
        str(live.dicom_port), str(cr),
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr

    web = DICOMwebClient(url=live.base_url + "/dicomweb", headers=live.headers())
    instances = web.search_for_instances(fields=["Modality"])
    classes = {i["00080016"]["Value"][0]: i for i in instances}
    expected = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in shared}
    expected |= {str(pydicom.dcmread(cr, stop_before_pixels=True).SOPClassUID)}
    expected |= {CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, SegmentationStorage}
    assert set(classes) == expected
    assert len(instances) == len(made) + len(shared) + 1

    # The SEG points at the de-identified CT, not at the UIDs the modality sent.
    seg_hit = classes[SegmentationStorage]
    seg = web.retrieve_instance(
        *(seg_hit[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018"))
    )
    stored_ct = [i for i in instances if i["00080016"]["Value"][0] == CTImageStorage]
    ct_uids = {i["00080018"]["Value"][0] for i in stored_ct}
    (ct_series_uid,) = {i["0020000E"]["Value"][0] for i in stored_ct}
    assert ct_series_uid != ct_series
    (referenced_series,) = seg.ReferencedSeriesSequence
    assert referenced_series.SeriesInstanceUID == ct_series_uid
    assert {r.ReferencedSOPInstanceUID for r in referenced_series.ReferencedInstanceSequence} == (
        ct_uids
    )
    sources = {
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert sources <= ct_uids and sources
    assert seg.StudyInstanceUID == stored_ct[0]["0020000D"]["Value"][0]
    assert (
        seg.FrameOfReferenceUID
        == web.retrieve_instance_metadata(
            stored_ct[0]["0020000D"]["Value"][0], ct_series_uid, sorted(ct_uids)[0]
        )["00200052"]["Value"][0]
    )
    assert "DOE" not in str(seg.PatientName)
