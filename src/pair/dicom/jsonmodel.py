"""The DICOM JSON model (PS3.18 F.2) for index rows and stored headers."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pair.core.errors import BadRequest

BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def parse_attribute(name: str) -> int:
    """A QIDO attribute given as keyword (``PatientID``) or tag (``00100020``)."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise BadRequest(f"Unknown DICOM attribute {name!r}: use a keyword or an 8-hex-digit tag.")
    return int(tag)


def tag_hex(tag: int) -> str:
    return f"{tag:08X}"


@lru_cache(maxsize=4096)
def vr_of(tag: int) -> str:
    try:
        vr = dictionary_VR(Tag(tag))
    except KeyError:
        return "UN"
    return vr.split(" or ")[0] if vr else "UN"


def _person_name(value: Any) -> dict[str, str]:
    return {"Alphabetic": str(value)}


# How a Python value becomes a JSON "Value" entry, per VR (everything else: str).
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "PN": _person_name,
    **dict.fromkeys(("IS", "SL", "SS", "UL", "US", "SV", "UV"), int),
    **dict.fromkeys(("DS", "FL", "FD"), float),
}


def json_value(tag: int, value: Any) -> dict[str, Any]:
    """One attribute in DICOM JSON; empty values give the VR only."""
    return _encode(vr_of(tag), value)


def _encode(vr: str, value: Any) -> dict[str, Any]:
    if value is None or value == "" or value == []:
        return {"vr": vr}
    convert = _CONVERTERS.get(vr, str)
    if isinstance(value, list):
        return {"vr": vr, "Value": [convert(v) for v in value]}
    return {"vr": vr, "Value": [convert(value)]}


@lru_cache(maxsize=4096)
def _keyword_tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return int(tag)


@lru_cache(maxsize=4096)
def _keyword_key(keyword: str) -> tuple[str, str]:
    """``keyword`` -> (8-hex-digit JSON key, VR): QIDO builds thousands of these per request."""
    tag = _keyword_tag(keyword)
    return f"{tag:08X}", vr_of(tag)


def attributes(pairs: dict[str, Any]) -> dict[str, Any]:
    """Build a DICOM JSON object from ``{keyword: value}``."""
    out: dict[str, Any] = {}
    for keyword, value in pairs.items():
        key, vr = _keyword_key(keyword)
        out[key] = _encode(vr, value)
    return out


def dataset_json(
    ds: Dataset,
    bulk_uri: Callable[[str], str] | None = None,
    only: set[int] | None = None,
) -> dict[str, Any]:
    """Whole-header DICOM JSON; bulk data becomes a BulkDataURI when ``bulk_uri`` is given."""

    def handler(elem: Any) -> str:
        tag = tag_hex(int(elem.tag))
        return bulk_uri(tag) if bulk_uri else ""

    if only is not None:
        ds = Dataset({Tag(t): ds[t] for t in only if t in ds})
    result: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=1024, bulk_data_element_handler=handler
    )
    if bulk_uri is None:
        for key in [k for k, v in result.items() if "BulkDataURI" in v]:
            result[key] = {"vr": result[key]["vr"]}
    return result


def element_json(elem: Any, bulk_uri: Callable[[str], str]) -> dict[str, Any]:
    """One element in DICOM JSON; one that cannot be encoded is given with its VR only."""
    try:
        result: dict[str, Any] = elem.to_json_dict(
            bulk_data_element_handler=lambda e: bulk_uri(tag_hex(int(e.tag))),
            bulk_data_threshold=1024,
        )
    except Exception:
        return {"vr": str(getattr(elem, "VR", None) or "UN")}
    return result


def keyword(tag: int) -> str:
    return keyword_for_tag(tag) or tag_hex(tag)
