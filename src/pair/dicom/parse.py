"""Parse and validate incoming instances, with a precise reason for every rejection."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pair.core import fastpaths
from pair.core.errors import Invalid
from pair.dicom.encode import fast_part10

REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_UID_TAGS = tuple(BaseTag(t) for t in (0x0020000D, 0x0020000E, 0x00080018, 0x00080016))
_ROWS, _COLUMNS = BaseTag(0x00280010), BaseTag(0x00280011)
_BITS_ALLOCATED, _SAMPLES_PER_PIXEL = BaseTag(0x00280100), BaseTag(0x00280002)
_FRAMES, _PIXEL_DATA = BaseTag(0x00280008), BaseTag(0x7FE00010)


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
    return validate_dataset(_read(data), expect_pixel_length=True)


def _parse_bytes_pydicom(data: bytes) -> ParsedInstance:
    """The reference for ``parse_bytes``: keyword-attribute validation (benchmarks, tests)."""
    return _validate_by_keyword(_read(data), expect_pixel_length=True)


def _read(data: bytes) -> Dataset:
    if len(data) < 8:
        raise InvalidInstance(
            "Not DICOM: the payload is empty or shorter than a DICOM header.", "not_dicom"
        )
    # Part 10 with preamble, or (as some clients send) the file meta group without the preamble
    lenient = data[128:132] != b"DICM" and data[:2] == b"\x02\x00"
    try:
        return pydicom.dcmread(io.BytesIO(data), force=lenient)
    except InvalidDicomError:
        raise InvalidInstance(
            "Not DICOM: no 'DICM' prefix at byte 128 (a Part 10 file is required).", "not_dicom"
        ) from None
    except Exception as exc:  # pydicom raises many types on truncated or corrupt input
        raise InvalidInstance(
            f"Unreadable DICOM: {type(exc).__name__}: {exc}"[:300], "unreadable"
        ) from None


def validate_dataset(ds: Dataset, *, expect_pixel_length: bool = False) -> ParsedInstance:
    """Check UIDs, hierarchy and (for files) that pixel data is not truncated.

    Looks elements up by tag and reads the pixel module's US values without decoding them
    (this runs for every ingested instance); same outcome as ``_validate_by_keyword``."""
    try:
        uids = []
        for keyword, tag in zip(REQUIRED_UIDS, _UID_TAGS, strict=True):
            value = ds[tag].value if tag in ds._dict else None
            _check_uid(keyword, value)
            uids.append(value)
        study, series, sop = uids[0], uids[1], uids[2]
        if study == series or series == sop:
            raise InvalidInstance(
                "Inconsistent hierarchy: study, series and SOP instance UIDs must differ.",
                "inconsistent_hierarchy",
            )
        ts = _check_meta(ds, sop)
        if expect_pixel_length and _PIXEL_DATA in ds._dict and not UID(ts).is_compressed:
            _check_native_pixel_length(ds)
    except InvalidInstance:
        raise
    except Exception as exc:
        raise InvalidInstance(
            f"Unreadable DICOM element: {type(exc).__name__}: {exc}"[:300], "unreadable"
        ) from None
    return ParsedInstance(ds, ts)


def _validate_by_keyword(ds: Dataset, *, expect_pixel_length: bool = False) -> ParsedInstance:
    """``validate_dataset`` as first written, with keyword attributes (the reference)."""
    try:
        for keyword in REQUIRED_UIDS:
            _check_uid(keyword, ds.get(keyword))
        if ds.StudyInstanceUID == ds.SeriesInstanceUID or ds.SeriesInstanceUID == ds.SOPInstanceUID:
            raise InvalidInstance(
                "Inconsistent hierarchy: study, series and SOP instance UIDs must differ.",
                "inconsistent_hierarchy",
            )
        ts = _check_meta(ds, ds.SOPInstanceUID)
        if expect_pixel_length and "PixelData" in ds and not UID(ts).is_compressed:
            _check_native_pixel_length_by_keyword(ds)
    except InvalidInstance:
        raise
    except Exception as exc:
        raise InvalidInstance(
            f"Unreadable DICOM element: {type(exc).__name__}: {exc}"[:300], "unreadable"
        ) from None
    return ParsedInstance(ds, ts)


def _check_uid(keyword: str, value: object) -> None:
    if value in (None, ""):
        raise InvalidInstance(f"Missing required attribute {keyword}.", "missing_uid")
    if not _valid_uid(value):
        raise InvalidInstance(
            f"{keyword} is not a valid UID (digits and dots, no leading zeros, "
            "at most 64 characters).",
            "invalid_uid",
        )


def _check_meta(ds: Dataset, sop_instance_uid: object) -> str:
    """The transfer syntax, after checking the file meta names the same SOP instance."""
    meta = getattr(ds, "file_meta", None)
    if (
        meta is not None
        and "MediaStorageSOPInstanceUID" in meta
        and str(meta.MediaStorageSOPInstanceUID) != str(sop_instance_uid)
    ):
        raise InvalidInstance(
            "File meta MediaStorageSOPInstanceUID differs from SOPInstanceUID.",
            "inconsistent_hierarchy",
        )
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ""
    if not ts:
        ts = ImplicitVRLittleEndian if ds.is_implicit_VR else ExplicitVRLittleEndian
    return ts


def _us(ds: Dataset, tag: BaseTag) -> Any:
    """``ds[tag].value`` for a pixel-module US element; a plain 2-byte little-endian raw value
    is read without converting the element (the encoder then copies it verbatim)."""
    elem = ds._dict.get(tag)
    if (
        type(elem) is RawDataElement
        and elem.VR in ("US", None)
        and elem.is_little_endian
        and type(elem.value) is bytes
        and len(elem.value) == 2
    ):
        return int.from_bytes(elem.value, "little")
    return ds[tag].value


def _check_native_pixel_length(ds: Dataset) -> None:
    """Pixel Data at least as long as Rows x Columns x samples x frames x bits."""
    elements = ds._dict
    try:
        rows, cols = int(_us(ds, _ROWS)), int(_us(ds, _COLUMNS))
        bits = int(_us(ds, _BITS_ALLOCATED))
        spp = int(_us(ds, _SAMPLES_PER_PIXEL) if _SAMPLES_PER_PIXEL in elements else 1)
        frames = int((ds[_FRAMES].value if _FRAMES in elements else 1) or 1)
    except (KeyError, TypeError, ValueError):
        raise _invalid_pixel_module() from None
    _check_length(len(ds[_PIXEL_DATA].value), rows, cols, spp, frames, bits)


def _check_native_pixel_length_by_keyword(ds: Dataset) -> None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise _invalid_pixel_module() from None
    _check_length(len(ds.PixelData), rows, cols, spp, frames, bits)


def _invalid_pixel_module() -> InvalidInstance:
    return InvalidInstance(
        "Pixel Data present but Rows, Columns or BitsAllocated missing or invalid.",
        "invalid_pixel_module",
    )


def _check_length(actual: int, rows: int, cols: int, spp: int, frames: int, bits: int) -> None:
    expected = rows * cols * spp * frames * bits // 8
    if actual < expected:
        raise InvalidInstance(
            f"Truncated Pixel Data: {actual} bytes, expected {expected} "
            f"({rows}x{cols}x{spp}x{frames} at {bits} bits).",
            "truncated",
        )


# Elements that key the patient's identity and its de-identification (the site-private
# mapping store keeps their original values): a NUL inside one cannot be dropped or stored.
IDENTITY_KEYWORDS = ("PatientID", "PatientName", "IssuerOfPatientID", "AccessionNumber")
_IDENTITY_TAGS = tuple(
    (k, BaseTag(t))
    for k, t in zip(
        IDENTITY_KEYWORDS, (0x00100020, 0x00100010, 0x00100021, 0x00080050), strict=True
    )
)


def check_identity_values(ds: Dataset) -> None:
    """Refuse a NUL byte inside an identity element (trailing NUL padding is already gone):
    PostgreSQL cannot store it, and dropping it would merge two patients' identities."""
    for keyword, tag in _IDENTITY_TAGS:
        if tag not in ds._dict:
            continue
        try:
            value = ds[tag].value
        except Exception:
            raise InvalidInstance(f"{keyword} cannot be read.", "invalid_value") from None
        values = list(value) if value.__class__.__name__ == "MultiValue" else [value]
        if any("\x00" in str(v) for v in values):
            raise InvalidInstance(
                f"{keyword} contains a NUL byte (0x00); send the value without it.",
                "invalid_value",
            )


def to_part10_bytes(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Serialise with a fresh, consistent file meta header.

    Sets ``ds.file_meta``. Byte-identical to ``_to_part10_bytes_pydicom``; the fast encoder
    (switched by ``PAIR_FAST_PATHS``) handles the little-endian syntaxes and leaves anything
    else to pydicom; where it raises, pydicom writes (or raises its own error) and the failure
    is logged.
    """
    ds.file_meta = part10_file_meta(ds, transfer_syntax_uid)
    data = None
    if fastpaths.enabled():
        try:
            data = fast_part10(ds)
        except Exception as exc:  # pydicom decides for what the fast encoder cannot write
            fastpaths.fell_back("part10_encoder", exc)
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
