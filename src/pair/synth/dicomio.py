"""DICOM header building and writing for the synthetic studies (pydicom).

Headers carry the fake PHI that de-identification must remove: names, IDs, birth date, address,
phone, accession, physicians, institution, free text mentioning the patient, a request sequence
and a private block holding a copy of the name and MRN.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pair.synth import config
from pair.synth.config import SiteArchetype
from pair.synth.phi import Identity

TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "rle": RLELossless,
    "jpegls": JPEGLSLossless,
    "j2k": JPEG2000Lossless,
}
PRIVATE_GROUP = 0x0099
PRIVATE_CREATOR = "PAIR SYNTH PHI"


def usable_syntax(key: str) -> str:
    """``key`` if pydicom has a working encoder for it here, else ``"explicit"`` (uncompressed).

    JPEG-LS needs pyjpegls, JPEG 2000 pylibjpeg-openjpeg; RLE always works (pydicom's own).
    """
    tsuid = TRANSFER_SYNTAXES[key]
    if not tsuid.is_compressed:
        return key
    return key if get_encoder(tsuid).is_available else "explicit"


def uid(*parts: object) -> UID:
    """A UID that depends only on ``parts`` (the seed, site, patient, ... path)."""
    return generate_uid(entropy_srcs=["pair-synth", *map(str, parts)])


def da(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


@dataclass(frozen=True)
class StudyContext:
    """What every instance of one study shares."""

    site: SiteArchetype
    site_number: int
    ident: Identity
    age: int
    study_uid: UID
    frame_uid: UID
    accession: str
    date: dt.date
    time: str
    description: str
    referring: str
    performing: str
    operator: str
    history: str
    image_comment: str
    patient_comment: str


def base_dataset(
    ctx: StudyContext,
    sop_class: UID,
    sop_uid: UID,
    series_uid: UID,
    modality: str,
    series_number: int,
    series_description: str,
) -> Dataset:
    """Patient, study, series, equipment and SOP common modules with fake PHI filled in."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = da(ctx.date)
    ds.InstanceCreationTime = ctx.time
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = da(ctx.date)
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ctx.time
    ds.AccessionNumber = ctx.accession
    ds.Modality = modality
    ds.Manufacturer = ctx.site.ct.manufacturer if modality == "CT" else ctx.site.cxr.manufacturer
    ds.InstitutionName = ctx.site.institution
    ds.InstitutionAddress = ctx.site.address
    ds.ReferringPhysicianName = ctx.referring
    ds.StationName = f"{ctx.site.station_prefix}{modality}{ctx.site_number:02d}"
    ds.StudyDescription = ctx.description
    ds.SeriesDescription = series_description
    ds.InstitutionalDepartmentName = ctx.site.department
    ds.PerformingPhysicianName = ctx.performing
    ds.OperatorsName = ctx.operator
    ds.ManufacturerModelName = ctx.site.ct.model if modality == "CT" else ctx.site.cxr.model
    ds.PatientName = ctx.ident.person.dicom
    ds.PatientID = ctx.ident.mrn
    ds.IssuerOfPatientID = ctx.site.mrn_prefix + "-MRN"
    ds.PatientBirthDate = da(ctx.ident.birth_date)
    ds.PatientSex = ctx.ident.sex
    ds.OtherPatientIDsSequence = Sequence([_other_id(ctx)])
    ds.PatientAge = f"{ctx.age:03d}Y"
    ds.PatientSize = f"{ctx.ident.size_m:.2f}"
    ds.PatientWeight = f"{ctx.ident.weight_kg:.1f}"
    ds.PatientAddress = ctx.ident.address
    ds.PatientTelephoneNumbers = ctx.ident.phone
    ds.EthnicGroup = config.clinical()["ethnic_group_header"][ctx.ident.race]
    ds.AdditionalPatientHistory = ctx.history
    ds.PatientComments = ctx.patient_comment
    ds.BodyPartExamined = "CHEST"
    ds.DeviceSerialNumber = f"{abs(hash_str(ctx.site.key)) % 10**6:06d}"
    ds.StudyInstanceUID = ctx.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ctx.accession[-6:]
    ds.SeriesNumber = series_number
    ds.ImageComments = ctx.image_comment
    ds.RequestingPhysician = ctx.referring
    req = Dataset()
    req.AccessionNumber = ctx.accession
    req.RequestedProcedureID = f"RP{ctx.accession[-7:]}"
    req.RequestedProcedureDescription = ctx.description
    req.ScheduledProcedureStepID = f"SPS{ctx.accession[-7:]}"
    req.ReasonForTheRequestedProcedure = f"r/o COVID-19 pneumonia, pt {ctx.ident.person.full}"[:64]
    ds.RequestAttributesSequence = Sequence([req])
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", ctx.ident.person.full)
    block.add_new(0x02, "LO", ctx.ident.mrn)
    block.add_new(0x03, "LT", f"{ctx.ident.person.dicom} DOB {da(ctx.ident.birth_date)}")
    return ds


def _other_id(ctx: StudyContext) -> Dataset:
    item = Dataset()
    item.PatientID = ctx.ident.other_id
    item.IssuerOfPatientID = "REGIONAL-HIE"
    item.TypeOfPatientID = "TEXT"
    return item


def hash_str(text: str) -> int:
    """Stable (not Python's salted ``hash``) integer from a string."""
    return int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little")


def set_pixels(ds: Dataset, arr: NDArray[np.integer], photometric: str, bits_stored: int) -> None:
    """Image pixel module for a single-frame, single-sample image."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(v) for v in arr.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if arr.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(arr).tobytes()


def write(ds: Dataset, path: Path, syntax: str, arr: NDArray[np.integer]) -> int:
    """Write ``ds`` (pixels ``arr``) as a Part 10 file in the site's transfer syntax (lossless
    compression keeps the SOP Instance UID); returns the file size."""
    tsuid = TRANSFER_SYNTAXES[syntax]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if tsuid.is_compressed:
        ds.compress(tsuid, arr, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = tsuid
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size
