"""Wrap a greyscale PNG as a DICOM instance (CR/DX), for tests, demos and evaluation cohorts.

UIDs are derived from the PNG's SHA-256 unless given, so wrapping the same file twice yields the
same instance (stable cache keys, idempotent ingest).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

SOP_CLASSES = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}


def png_to_dicom(
    png: Path,
    out: Path | None = None,
    *,
    modality: str = "CR",
    patient_id: str = "ANON",
    patient_name: str = "ANONYMOUS",
    patient_sex: str = "",
    patient_age: str = "",
    study_uid: str | None = None,
    series_uid: str | None = None,
    study_date: str = "20200101",
    view_position: str = "",
    body_part: str = "CHEST",
    manufacturer: str = "PAIR png_to_dicom",
    monochrome1: bool = False,
) -> Dataset:
    """Return (and write to ``out`` when given) a DICOM dataset holding the PNG's pixels.

    ``monochrome1=True`` stores inverted values with PhotometricInterpretation MONOCHROME1, so a
    correct viewer (and PAIR's preprocessing) shows the same picture.
    """
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality must be one of {sorted(SOP_CLASSES)}")
    data = Path(png).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with Image.open(png) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.uint8)
    if monochrome1:
        pixels = 255 - pixels

    def uid(kind: str) -> UID:
        return generate_uid(prefix=None, entropy_srcs=[digest, kind])

    sop_uid = uid("sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SOP_CLASSES[modality])
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = UID(study_uid) if study_uid else uid("study")
    ds.SeriesInstanceUID = UID(series_uid) if series_uid else uid("series")
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = patient_sex
    if patient_age:
        ds.PatientAge = patient_age
    ds.StudyDate = study_date
    ds.StudyTime = "000000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = manufacturer
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view_position
    ds.PatientOrientation = ""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
    return ds
