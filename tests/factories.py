"""Small DICOM instances with fake PHI for tests (the synth package makes realistic ones)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

# the syntaxes the ingest tests send (JPEG baseline comes from the shared CR file)
INGEST_TRANSFER_SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
]

FAKE_PATIENT = {
    "PatientName": "DOE^JOHNATHAN",
    "PatientID": "MRN0042424",
    "PatientBirthDate": "19570312",
    "PatientSex": "M",
    "PatientAge": "063Y",
    "PatientAddress": "12 Elm Street, Springfield",
    "AccessionNumber": "ACC9900123",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "InstitutionName": "Springfield General",
}


def ct_instance(
    *,
    study_uid: str,
    series_uid: str,
    index: int = 1,
    size: int = 32,
    patient: dict[str, str] | None = None,
    study_date: str = "20200415",
    modality: str = "CT",
    description: str = "CT CHEST WITHOUT CONTRAST",
) -> Dataset:
    p = {**FAKE_PATIENT, **(patient or {})}
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "for"])
    for k, v in p.items():
        setattr(ds, k, v)
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.StudyDescription = description
    ds.SeriesDescription = "AXIAL 5MM"
    ds.Modality = modality
    ds.Manufacturer = "ACME"
    ds.SeriesNumber = 2
    ds.InstanceNumber = index
    ds.ImageComments = f"Patient {p['PatientName'].split('^')[0]} scanned for cough"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.WindowCenter = -600
    ds.WindowWidth = 1500
    ds.ImagePositionPatient = [0, 0, float(index)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    rng = np.random.default_rng(index)
    arr = rng.integers(-1000, 400, size=(size, size), dtype=np.int16)
    ds.PixelData = arr.tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_series(folder: Path, n: int = 3, **kwargs: object) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study = str(kwargs.pop("study_uid", generate_uid()))
    series = str(kwargs.pop("series_uid", generate_uid()))
    paths = []
    for i in range(1, n + 1):
        ds = ct_instance(study_uid=study, series_uid=series, index=i, **kwargs)  # type: ignore[arg-type]
        path = folder / f"img{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def quarantined_instance(node: object, facility_id: int, ds: Dataset) -> int:
    """Send ``ds`` through the real ingest pipeline; it must be quarantined. Returns the item."""
    from pair.audit.service import Actor
    from pair.core.node import Node
    from pair.repository.ingest import Outcome, Payload, ingest_batch

    assert isinstance(node, Node)
    actor = Actor.system("test", facility_id=facility_id)
    (result,) = ingest_batch(node, facility_id, [Payload(to_bytes(ds), "leaky")], "test", actor)
    assert result.outcome is Outcome.QUARANTINED and result.quarantine_id is not None
    return result.quarantine_id


def leaky_instance(given_name: str = "JOHNATHAN") -> Dataset:
    """A CT whose Body Part Examined holds the patient's given name (kept by every profile)."""
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    ds.BodyPartExamined = given_name
    return ds
