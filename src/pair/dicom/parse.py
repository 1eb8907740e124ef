"""Parse and validate incoming instances, with a precise reason for every rejection."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pair.core.errors import Invalid
from pair.dicom.encode import fast_part10

REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


class InvalidInstance(Invalid):
    """A rejected instance. ``reason_code`` is a stable machine-readable key."""

    code = "invalid_instance"

    def __init__(self, message: str, reason_code: str) -> None:
        super().__init__(message, details={"reason": reason_code})
        self.reason_code = reason_code


@dataclass(frozen=True)
class ParsedInstance:
    dataset: Dataset
    transfer_syntax_uid: str


def _valid_uid(value: object) -> bool:
    text = str(value or "")
    if not text or len(text) > 64:
        return False
    return all(
        part.isdigit() and (part == "0" or not part.startswith("0")) for part in text.split(".")
    )


def parse_bytes(data: bytes) -> ParsedInstance:
    """Parse a Part 10 file (or a bare dataset with an explicit preamble-less stream)."""
    if len(data) < 8:
        raise InvalidInstance(
            "Not DICOM: the payload is empty or shorter than a DICOM header.", "not_dicom"
        )
    # Part 10 with preamble, or (as some clients send) the file meta group without the preamble
    lenient = data[128:132] != b"DICM" and data[:2] == b"\x02\x00"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=lenient)
    except InvalidDicomError:
        raise InvalidInstance(
            "Not DICOM: no 'DICM' prefix at byte 128 (a Part 10 file is required).", "not_dicom"
        ) from None
    except Exception as exc:  # pydicom raises many types on truncated or corrupt input
        raise InvalidInstance(
            f"Unreadable DICOM: {type(exc).__name__}: {exc}"[:300], "unreadable"
        ) from None
    return validate_dataset(ds, expect_pixel_length=True)


def validate_dataset(ds: Dataset, *, expect_pixel_length: bool = False) -> ParsedInstance:
    """Check UIDs, hierarchy and (for files) that pixel data is not truncated."""
    try:
        for keyword in REQUIRED_UIDS:
            value = ds.get(keyword)
            if value in (None, ""):
                raise InvalidInstance(f"Missing required attribute {keyword}.", "missing_uid")
            if not _valid_uid(value):
                raise InvalidInstance(
                    f"{keyword} is not a valid UID (digits and dots, no leading zeros, "
                    "at most 64 characters).",
                    "invalid_uid",
                )
        if ds.StudyInstanceUID == ds.SeriesInstanceUID or ds.SeriesInstanceUID == ds.SOPInstanceUID:
            raise InvalidInstance(
                "Inconsistent hierarchy: study, series and SOP instance UIDs must differ.",
                "inconsistent_hierarchy",
            )
        meta = getattr(ds, "file_meta", None)
        if (
            meta is not None
            and "MediaStorageSOPInstanceUID" in meta
            and str(meta.MediaStorageSOPInstanceUID) != str(ds.SOPInstanceUID)
        ):
            raise InvalidInstance(
                "File meta MediaStorageSOPInstanceUID differs from SOPInstanceUID.",
                "inconsistent_hierarchy",
            )
        ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ""
        if not ts:
            ts = ImplicitVRLittleEndian if ds.is_implicit_VR else ExplicitVRLittleEndian
        if expect_pixel_length and "PixelData" in ds and not UID(ts).is_compressed:
            _check_native_pixel_length(ds)
    except InvalidInstance:
        raise
    except Exception as exc:
        raise InvalidInstance(
            f"Unreadable DICOM element: {type(exc).__name__}: {exc}"[:300], "unreadable"
        ) from None
    return ParsedInstance(ds, ts)


def _check_native_pixel_length(ds: Dataset) -> None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise InvalidInstance(
            "Pixel Data present but Rows, Columns or BitsAllocated missing or invalid.",
            "invalid_pixel_module",
        ) from None
    expected = rows * cols * spp * frames * bits // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise InvalidInstance(
            f"Truncated Pixel Data: {actual} bytes, expected {expected} "
            f"({rows}x{cols}x{spp}x{frames} at {bits} bits).",
            "truncated",
        )


def to_part10_bytes(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Serialise with a fresh, consistent file meta header.

    Sets ``ds.file_meta``. Byte-identical to ``_to_part10_bytes_pydicom``; the fast encoder
    handles the little-endian syntaxes and leaves anything else (or any error) to pydicom.
    """
    ds.file_meta = part10_file_meta(ds, transfer_syntax_uid)
    try:
        data = fast_part10(ds)
    except Exception:  # pydicom decides (and raises its own error) for what we cannot write
        data = None
    return data if data is not None else _save_pydicom(ds)


def _to_part10_bytes_pydicom(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """The reference encoder: pydicom's ``save_as`` (what the fast encoder must equal)."""
    ds.file_meta = part10_file_meta(ds, transfer_syntax_uid)
    return _save_pydicom(ds)


def part10_file_meta(ds: Dataset, transfer_syntax_uid: str) -> FileMetaDataset:
    """The file meta group PAIR writes: media storage UIDs from the dataset, PAIR's
    implementation UID and version name."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(PAIR_IMPLEMENTATION_UID)
    meta.ImplementationVersionName = "PAIR_010"
    return meta


def _save_pydicom(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# 2.25 UUID-derived root (uuid5 of "pair:implementation-class"): no registered org root needed.
PAIR_IMPLEMENTATION_UID = "2.25.231815487640766887684293662531828263730"
