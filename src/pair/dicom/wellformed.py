"""Well-formedness rules: refuse at ingest what the node could not serve back.

Everything the node acknowledges must be retrievable as stored (metadata, frames, rendered),
so an instance whose elements cannot be decoded, whose numbers are not numbers, whose sequences
nest absurdly deep or whose pixel module cannot describe an image is refused here, with the
element named. The limits live in ``data/wellformed.yaml``. The dataset is not modified:
raw elements are decoded into copies, so the fast encoder still copies them verbatim.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pydicom.valuerep import VR

from pair.dicom.parse import InvalidInstance

_KNOWN_VRS = frozenset(str(v) for v in VR)
_PIXEL_DATA = BaseTag(0x7FE00010)
_UNDEFINED_LENGTH = 0xFFFFFFFF
# binary VRs whose value length must be a multiple of their item size
_FIXED_SIZE = {"AT": 4, "FD": 8, "FL": 4, "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8}


@dataclass(frozen=True)
class Rules:
    max_sequence_depth: int
    is_pattern: re.Pattern[str]
    is_min: int
    is_max: int
    ds_pattern: re.Pattern[str]
    ds_max_abs: float
    pixel: dict[str, Any]


@lru_cache(maxsize=1)
def rules() -> Rules:
    text = resources.files("pair.dicom").joinpath("data/wellformed.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return Rules(
        max_sequence_depth=int(data["max_sequence_depth"]),
        is_pattern=re.compile(data["integer_string"]["pattern"]),
        is_min=int(data["integer_string"]["min"]),
        is_max=int(data["integer_string"]["max"]),
        ds_pattern=re.compile(data["decimal_string"]["pattern"]),
        ds_max_abs=float(data["decimal_string"]["max_abs"]),
        pixel=data["pixel_module"],
    )


def name(tag: int) -> str:
    """``Keyword (gggg,eeee)``: how refusals name an element."""
    t = Tag(tag)
    keyword = keyword_for_tag(t) or ("Private" if t.is_private else "Unknown")
    return f"{keyword} ({t.group:04X},{t.element:04X})"


def _refuse(message: str, code: str) -> InvalidInstance:
    return InvalidInstance(message[:300], code)


def check(ds: Dataset, transfer_syntax_uid: str) -> None:
    """Raise ``InvalidInstance`` naming the first element that breaks a rule."""
    r = rules()
    try:
        _walk(ds, 0, r)
        _check_transfer_syntax(ds, transfer_syntax_uid)
        if _PIXEL_DATA in ds._dict:
            _check_pixel_module(ds, r)
    except InvalidInstance:
        raise
    except Exception as exc:  # anything pydicom cannot make sense of is unservable too
        raise _refuse(
            f"Unreadable DICOM element: {type(exc).__name__}: {exc}", "unreadable"
        ) from None


def _decoded(ds: Dataset, elem: DataElement | RawDataElement) -> DataElement:
    if not isinstance(elem, RawDataElement):
        return elem
    if elem.VR is None and not elem.is_implicit_VR:
        raise _refuse(
            f"{name(elem.tag)} has no valid VR in an explicit VR data set.", "malformed_element"
        )
    try:
        return convert_raw_data_element(elem, encoding=ds._character_set, ds=ds)
    except Exception as exc:  # pydicom raises many types for bytes it cannot decode
        raise _refuse(
            f"{name(elem.tag)} cannot be decoded (VR {_vr_text(elem.VR)}): {type(exc).__name__}.",
            "malformed_element",
        ) from None


def _vr_text(vr: object) -> str:
    return repr(vr) if vr is not None and str(vr) not in _KNOWN_VRS else str(vr)


def _raw_ok(elem: RawDataElement, r: Rules) -> bool:
    """Check a raw element without decoding it (the common case, and cheap); False when it
    needs decoding first (sequences, implicit VR, unknown VR)."""
    vr = elem.VR
    if vr is None or vr == "SQ" or vr not in _KNOWN_VRS:
        return False
    value = elem.value or b""
    size = _FIXED_SIZE.get(vr)
    if size and elem.length != _UNDEFINED_LENGTH and len(value) % size:
        raise _refuse(
            f"{name(elem.tag)} has {len(value)} bytes, not a multiple of {size} (VR {vr}).",
            "malformed_element",
        )
    if vr in ("IS", "DS") and value:
        for text in value.decode("latin-1").split("\\"):
            _check_number(elem.tag, vr, text.strip(" \0"), r)
    return True


def _walk(ds: Dataset, depth: int, r: Rules) -> None:
    for elem in list(ds._dict.values()):
        if isinstance(elem, RawDataElement) and _raw_ok(elem, r):
            continue
        decoded = _decoded(ds, elem)
        if decoded.VR not in _KNOWN_VRS:
            raise _refuse(
                f"{name(decoded.tag)} has an unknown VR {decoded.VR!r}.", "malformed_element"
            )
        if decoded.VR == "SQ":
            if decoded.value and depth + 1 > r.max_sequence_depth:
                raise _refuse(
                    f"{name(decoded.tag)}: sequences nested deeper than "
                    f"{r.max_sequence_depth} levels.",
                    "sequence_too_deep",
                )
            for item in decoded.value or []:
                _walk(item, depth + 1, r)
        elif decoded.VR in ("IS", "DS") and decoded.value not in (None, ""):
            values = decoded.value if isinstance(decoded.value, MultiValue) else [decoded.value]
            for value in values:
                _check_number(decoded.tag, decoded.VR, value, r)


def _check_number(tag: int, vr: str, value: object, r: Rules) -> None:
    text = str(getattr(value, "original_string", None) or value).strip()
    if text == "":
        return
    if vr == "IS":
        ok = bool(r.is_pattern.match(text)) and r.is_min <= int(float(text)) <= r.is_max
        allowed = f"an integer from {r.is_min} to {r.is_max}"
    else:
        ok = bool(r.ds_pattern.match(text)) and abs(float(text)) <= r.ds_max_abs
        ok = ok and math.isfinite(float(text))
        allowed = "a decimal number"
    if not ok:
        raise _refuse(
            f"{name(tag)} value {text[:24]!r} is not {allowed} (VR {vr}).", "malformed_element"
        )


def _check_transfer_syntax(ds: Dataset, transfer_syntax_uid: str) -> None:
    ts = UID(transfer_syntax_uid)
    if not ts.is_transfer_syntax:
        raise _refuse(
            f"TransferSyntaxUID (0002,0010) {str(ts)[:64]!r} is not a known transfer syntax.",
            "transfer_syntax_mismatch",
        )
    elem = ds._dict.get(_PIXEL_DATA)
    if elem is None:
        return
    if isinstance(elem, RawDataElement):
        encapsulated = elem.length == _UNDEFINED_LENGTH
    else:
        encapsulated = bool(elem.is_undefined_length)
    if encapsulated != ts.is_encapsulated:
        kind = "encapsulated (compressed)" if ts.is_encapsulated else "native"
        raise _refuse(
            f"PixelData (7FE0,0010) does not match transfer syntax {ts}: it requires {kind} "
            f"pixel data, the file has {'encapsulated' if encapsulated else 'native'}.",
            "transfer_syntax_mismatch",
        )


def _value(ds: Dataset, keyword: str) -> Any:
    """The element's value, read from the raw bytes of the plain little-endian US, IS and CS
    elements of the pixel module without converting them (the encoder copies those verbatim)."""
    tag = _tag(keyword)
    elem = ds._dict.get(tag)
    if elem is None:
        return None
    if type(elem) is RawDataElement and elem.is_little_endian and type(elem.value) is bytes:
        if elem.VR == "US" and len(elem.value) == 2:
            return int.from_bytes(elem.value, "little")
        if elem.VR in ("IS", "CS"):
            return elem.value.decode("latin-1").strip(" \0")
    return ds[tag].value


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    value = _value(ds, keyword)
    if value is None or value == "":
        return default
    if isinstance(value, MultiValue | list):
        value = value[0] if value else None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        raise _refuse(f"{name(_tag(keyword))} is not a number.", "invalid_pixel_module") from None


def _pixel_refusal(keyword: str, value: object, allowed: str) -> InvalidInstance:
    return _refuse(
        f"{name(_tag(keyword))} is {value!r}; allowed: {allowed}.", "invalid_pixel_module"
    )


@lru_cache(maxsize=64)
def _tag(keyword: str) -> BaseTag:
    return Tag(tag_for_keyword(keyword) or 0)


def _in_range(ds: Dataset, keyword: str, limits: dict[str, int], default: int | None) -> int:
    value = _int(ds, keyword, default)
    if value is None or not limits["min"] <= value <= limits["max"]:
        raise _pixel_refusal(keyword, value, f"{limits['min']} to {limits['max']}")
    return value


def _one_of(ds: Dataset, keyword: str, allowed: list[int], default: int | None) -> int:
    value = _int(ds, keyword, default)
    if value not in allowed:
        raise _pixel_refusal(keyword, value, ", ".join(str(a) for a in allowed))
    return value


def _check_pixel_module(ds: Dataset, r: Rules) -> None:
    """The Image Pixel Module must describe an image the node can decode and render."""
    p = r.pixel
    _in_range(ds, "Rows", p["rows"], None)
    _in_range(ds, "Columns", p["columns"], None)
    _in_range(ds, "NumberOfFrames", p["number_of_frames"], 1)
    bits = _one_of(ds, "BitsAllocated", p["bits_allocated"], None)
    stored = _in_range(ds, "BitsStored", {"min": 1, "max": bits}, bits)
    _in_range(ds, "HighBit", {"min": stored - 1, "max": bits - 1}, stored - 1)
    _one_of(ds, "PixelRepresentation", p["pixel_representation"], 0)
    photometric = str(_value(ds, "PhotometricInterpretation") or "").strip()
    samples_for: dict[str, int] = p["photometric_interpretation"]
    if photometric not in samples_for:
        raise _pixel_refusal("PhotometricInterpretation", photometric, ", ".join(samples_for))
    samples = _one_of(ds, "SamplesPerPixel", [samples_for[photometric]], 1)
    if samples > 1:
        _one_of(ds, "PlanarConfiguration", p["planar_configuration"], None)
    if photometric == "PALETTE COLOR":
        missing = [k for k in p["palette_requires"] if k not in ds]
        if missing:
            raise _refuse(
                f"PhotometricInterpretation PALETTE COLOR without {name(_tag(missing[0]))}.",
                "invalid_pixel_module",
            )
