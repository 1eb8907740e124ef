"""Fast Part 10 encoder for little-endian datasets, byte-identical to pydicom's ``dcmwrite``.

Ingest re-encodes every de-identified instance: raw elements copied unchanged from the parsed
input plus decoded ones (remapped UIDs, shifted dates, the pseudonym, the method sequence).
pydicom writes each element through fresh buffer objects, charset conversion and property
lookups, which dominated the per-instance CPU. This module follows pydicom's
``dcmwrite(..., enforce_file_format=True)`` / ``write_dataset`` step by step (same element
order, same conversions and side effects on the dataset) and writes into one list joined once:
raw elements whose encoding matches as header + original value bytes, decoded elements of the
common VRs (ASCII text, UIDs, dates, numbers, number strings) formatted as pydicom's writers
format them, other decoded values through pydicom's own value writers, and datasets pydicom
would re-encode wholesale (foreign encoding, changed character set, ambiguous VRs) through
pydicom's ``write_dataset``.

``fast_part10`` returns ``None`` for what it does not handle (big endian, private or unknown
transfer syntaxes, unusual file meta or preamble); callers then use pydicom itself.
``tests/dicom/test_fast_codec.py`` holds the byte-equality checks.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any, cast

from pydicom.charset import (
    convert_encodings,
    custom_encoders,
    default_encoding,
    need_tail_escape_sequence_encodings,
    python_encoding,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import (
    _LUT_DESCRIPTOR_TAGS,
    write_data_element,
    write_dataset,
    writers,
)
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import (
    AMBIGUOUS_VR,
    CUSTOMIZABLE_CHARSET_VR,
    EXPLICIT_VR_LENGTH_16,
    EXPLICIT_VR_LENGTH_32,
    IS,
    DSdecimal,
    DSfloat,
)

_PIXEL_DATA = 0x7FE00010
_CHARSET = BaseTag(0x00080005)
_UNDEFINED = 0xFFFFFFFF
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_ITEM_DELIMITER = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_UNDEFINED_UL = b"\xff\xff\xff\xff"

_TAG = struct.Struct("<HH")
_UL = struct.Struct("<L")
_IMPLICIT_HEADER = struct.Struct("<HHL")
_SHORT_HEADER = struct.Struct("<HH2sH")
_LONG_HEADER = struct.Struct("<HH2s2xL")
_VR_LONG = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_VR_SHORT = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_16)
_PIXEL_VRS = frozenset(("OB", "OW", "OB or OW"))
_CHARSET_VRS = frozenset(str(vr) for vr in CUSTOMIZABLE_CHARSET_VR)
# pydicom's value writers by VR, except SQ (written here)
_WRITERS: dict[str, tuple[Any, Any]] = {str(vr): w for vr, w in writers.items() if vr != "SQ"}


def _little_endian_syntax(ts: str) -> tuple[bool, bool] | None:
    """(implicit VR, deflated) for the public little-endian syntaxes handled here, else None."""
    if ts == ImplicitVRLittleEndian:
        return True, False
    if ts == ExplicitVRLittleEndian:
        return False, False
    if ts == DeflatedExplicitVRLittleEndian:
        return False, True
    uid = UID(ts)
    if not uid.is_transfer_syntax or uid.is_private or not uid.is_little_endian:
        return None
    if uid.is_implicit_VR or uid.is_deflated:
        return None
    return False, False


def _ui_bytes(value: Any) -> bytes | None:
    """A file meta UI value as pydicom's ``write_UI`` writes it, for plain non-empty strings."""
    if not isinstance(value, str) or not value:
        return None
    try:
        data = value.encode(default_encoding)
    except UnicodeEncodeError:
        return None
    return data + b"\x00" if len(data) % 2 else data


def _explicit(tag: int, vr: str, value: bytes) -> bytes:
    if vr in _VR_LONG:
        return _LONG_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(value))
    return _SHORT_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(value))


def file_meta_bytes(meta: Dataset) -> bytes | None:
    """The file meta group exactly as ``write_file_meta_info(enforce_standard=True)`` writes a
    group holding the five elements ``to_part10_bytes`` sets; None for anything else."""
    expected = {0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
    elements: dict[int, Any] = {int(tag): elem for tag, elem in meta._dict.items()}
    if set(elements) != expected:
        return None
    parts = [_explicit(0x00020001, "OB", b"\x00\x01"), b"\x00\x01"]
    for tag in (0x00020002, 0x00020003, 0x00020010, 0x00020012):
        elem = elements[tag]
        if not isinstance(elem, DataElement) or elem.VR != "UI":
            return None
        data = _ui_bytes(elem.value)
        if data is None:
            return None
        parts += (_explicit(tag, "UI", data), data)
    elem = elements[0x00020013]
    if not isinstance(elem, DataElement) or elem.VR != "SH" or not isinstance(elem.value, str):
        return None
    name = elem.value.encode("ascii", errors="strict") if elem.value.isascii() else None
    if not name:
        return None
    if len(name) % 2:
        name += b" "
    parts += (_explicit(0x00020013, "SH", name), name)
    body = b"".join(parts)
    return _explicit(0x00020000, "UL", b"\0\0\0\0")[:8] + _UL.pack(len(body)) + body


def _ascii_codecs() -> frozenset[str]:
    """Python codecs (as ``convert_encodings`` names them) that ``encode_string`` applies
    as a plain ``str.encode`` and that encode ASCII text as ASCII."""
    ascii_text = bytes(range(128))
    names = set(python_encoding.values()) | {default_encoding}
    safe = set()
    for name in names:
        if name in custom_encoders or name in need_tail_escape_sequence_encodings:
            continue
        try:
            if ascii_text.decode("ascii").encode(name) == ascii_text:
                safe.add(name)
        except (LookupError, UnicodeError):
            continue
    return frozenset(safe)


_ASCII_CODECS = _ascii_codecs()
_STRING_VRS = frozenset(("AE", "AS", "CS", "DA", "DT", "TM", "UR"))  # write_string (str values)
_TEXT_VRS = frozenset(("LO", "LT", "SH", "ST", "UC", "UT"))  # write_text
_NUMBER_VRS = {"US": "H", "UL": "L", "SS": "h", "SL": "l", "FL": "f", "FD": "d"}
_NUMBER_STRING = (DSfloat, IS, DSdecimal)
_NUMBER_TYPES = (int, float)


def _joined(value: Any) -> str | None:
    """A str or a multi-value of str as ``multi_string`` joins it; None for other types."""
    if type(value) is str or type(value) is UID:
        return cast(str, value)
    if type(value) is MultiValue and all(type(v) is str or type(v) is UID for v in value):
        return "\\".join(value)
    return None


def _value_bytes(tag: int, vr: str, value: Any, encodings: list[str]) -> bytes | None:
    """The value bytes pydicom's writer for ``vr`` produces, for the plain common cases
    (ASCII text, numbers, number strings); None to use pydicom's writer."""
    if value is None or (type(value) is MultiValue and not value):
        return b""  # empty: write_data_element writes no value
    if vr in _NUMBER_VRS:
        fmt = _NUMBER_VRS[vr]
        if type(value) in _NUMBER_TYPES:
            return struct.pack("<" + fmt, value)
        if (
            type(value) is MultiValue
            and not (fmt == "h" and tag in _LUT_DESCRIPTOR_TAGS)
            and all(type(v) in _NUMBER_TYPES for v in value)
        ):
            return struct.pack(f"<{len(value)}{fmt}", *value)
        return None
    if vr == "IS" or vr == "DS":
        if type(value) in _NUMBER_STRING:
            text = value.original_string if hasattr(value, "original_string") else str(value)
        elif type(value) is MultiValue and all(type(v) in _NUMBER_STRING for v in value):
            text = "\\".join(
                v.original_string if hasattr(v, "original_string") else str(v) for v in value
            )
        elif type(value) is str and not value:
            return b""
        else:
            return None
        if len(text) % 2:
            text += " "
        return text.encode(default_encoding)
    text = _joined(value)
    if text is None:
        return None
    if not text and type(value) is not MultiValue:
        return b""
    if vr in _TEXT_VRS:
        if not text.isascii() or encodings[0] not in _ASCII_CODECS:
            return None
        data = text.encode()
        return data + b" " if len(data) % 2 else data
    if vr == "UI":
        data = text.encode(default_encoding)
        return data + b"\x00" if len(data) % 2 else data
    if vr in _STRING_VRS:
        data = text.encode(default_encoding)
        return data + b" " if len(data) % 2 else data
    return None


_CONVERTED: dict[tuple[str, ...], list[str]] = {}


def _converted(encodings: str | list[str]) -> list[str]:
    """``convert_encodings(encodings)``, remembered for the few values a node sees."""
    if isinstance(encodings, str):
        key: tuple[str, ...] = (encodings,)
    elif all(isinstance(e, str) for e in encodings):
        key = tuple(encodings)
    else:
        return convert_encodings(encodings)
    converted = _CONVERTED.get(key)
    if converted is None:
        converted = convert_encodings(encodings)
        if len(_CONVERTED) < 256:
            _CONVERTED[key] = converted
    return list(converted)


def _decoded_tree(ds: Dataset) -> bool:
    """True if pydicom's re-encoding of ``ds`` (``correct_ambiguous_vr`` and ``__getitem__``
    on every element) would change nothing: no raw element at this level, and no ambiguous
    VR or raw sequence anywhere below."""
    for elem in ds._dict.values():
        if type(elem) is not DataElement or elem.VR in AMBIGUOUS_VR:
            return False
        if elem.VR == "SQ" and not all(_untouched_item(item) for item in elem.value or ()):
            return False
    return True


def _untouched_item(ds: Dataset) -> bool:
    """True if ``correct_ambiguous_vr`` leaves this sequence item (and its items) alone."""
    for elem in ds._dict.values():
        vr = elem.VR
        if vr in AMBIGUOUS_VR or (elem.value is None and type(elem) is not DataElement):
            return False
        if vr == "SQ":
            if type(elem) is not DataElement:
                return False
            if not all(_untouched_item(item) for item in elem.value or ()):
                return False
    return True


class _ValueBuffer(io.BytesIO):
    """What pydicom's value writers need of a ``DicomIO``: ``write``, ``write_tag`` (AT) and
    the byte order (numbers; always little endian here)."""

    is_little_endian = True

    def write_tag(self, tag: int) -> None:
        self.write(_TAG.pack(tag >> 16, tag & 0xFFFF))


def _written_value(vr: str, elem: DataElement, encodings: list[str]) -> bytes | None:
    """The value bytes from pydicom's writer for ``vr`` (as ``write_data_element`` calls it)."""
    writer = _WRITERS.get(vr)
    if writer is None or elem.is_buffered:
        return None
    if elem.is_empty:
        return b""
    fn, param = writer
    fp = _ValueBuffer()
    if vr in _CHARSET_VRS:
        fn(fp, elem, encodings=encodings)
    elif param is not None:
        fn(fp, elem, param)
    else:
        fn(fp, elem)
    return fp.getvalue()


class _Writer:
    """Writes datasets in one little-endian encoding into a list of byte strings."""

    def __init__(self, implicit: bool) -> None:
        self.implicit = implicit
        self.encoding = (implicit, True)
        self.parts: list[bytes] = []

    def _pydicom(self, fn: Any, *args: Any) -> None:
        """Run a pydicom writer on a buffer in our encoding and keep what it wrote."""
        fp = DicomBytesIO()
        fp.is_implicit_VR = self.implicit
        fp.is_little_endian = True
        fn(fp, *args)
        self.parts.append(fp.getvalue())

    def dataset(self, ds: Dataset, parent_encoding: Any = default_encoding) -> None:
        """``pydicom.filewriter.write_dataset`` for a buffer already set to our encoding."""
        if (
            self.encoding != ds.original_encoding or ds.original_character_set != ds._character_set
        ) and not _decoded_tree(ds):
            # pydicom converts every raw element and corrects ambiguous VRs here: let it.
            self._pydicom(write_dataset, ds, parent_encoding)
            return
        # ds.get("SpecificCharacterSet", parent_encoding), without the keyword lookup
        elements = ds._dict
        encodings = ds[_CHARSET].value if _CHARSET in elements else parent_encoding
        converted: list[str] | None = None  # what write_data_element makes of `encodings`
        for tag in sorted(elements, key=int):
            if not tag & 0xFFFF and tag >> 16 > 6:
                continue  # retired group lengths are not written
            elem = elements[tag]
            if type(elem) is RawDataElement:
                if self.raw(tag, elem):
                    continue
                elem = ds.get_item(tag)  # a deferred value is read and converted here
            elif type(elem) is DataElement and (elem.tag is tag or elem.tag == tag):
                if converted is None:
                    converted = _converted(encodings or [default_encoding])
                if self.element(tag, elem, converted):
                    continue
            self._pydicom(write_data_element, elem, encodings)

    def raw(self, tag: int, elem: RawDataElement) -> bool:
        """Write a raw element verbatim as ``write_data_element`` does; False if unusual."""
        value = elem.value
        if type(value) is not bytes or (elem.tag is not tag and elem.tag != tag):
            return False
        undefined = elem.length == _UNDEFINED
        if undefined and tag == _PIXEL_DATA:
            return False  # pydicom checks the encapsulation
        group, element = tag >> 16, tag & 0xFFFF
        if self.implicit:
            length = _UNDEFINED if undefined else len(value)
            self.parts += (_IMPLICIT_HEADER.pack(group, element, length), value)
        else:
            vr = elem.VR or ""  # None (implicit VR input) is in neither set
            if vr in _VR_LONG:
                length = _UNDEFINED if undefined else len(value)
                header = _LONG_HEADER.pack(group, element, vr.encode(), length)
            elif vr in _VR_SHORT and not undefined and len(value) <= 0xFFFF:
                header = _SHORT_HEADER.pack(group, element, vr.encode(), len(value))
            else:
                return False
            self.parts += (header, value)
        if undefined:
            self.parts.append(_SEQ_DELIMITER)
        return True

    def element(self, tag: int, elem: DataElement, encodings: list[str]) -> bool:
        """``write_data_element`` for a decoded element, with pydicom's own value writers;
        False for what only pydicom does (buffered or undefined-length values, VR changes)."""
        vr = elem.VR
        if vr == "SQ":
            self.sequence(tag, elem, encodings)
            return True
        if tag >> 16 == 0x7FE0 and int(tag) == _PIXEL_DATA:  # (BaseTag.__eq__ is slow)
            return self.pixel_data(elem)
        if elem.is_undefined_length or (not self.implicit and len(vr) != 2):
            return False
        value = _value_bytes(tag, vr, elem.value, encodings)
        if value is None:
            value = _written_value(vr, elem, encodings)
            if value is None:
                return False
        group, element = tag >> 16, tag & 0xFFFF
        if self.implicit:
            header = _IMPLICIT_HEADER.pack(group, element, len(value))
        elif vr in _VR_LONG:
            header = _LONG_HEADER.pack(group, element, vr.encode(), len(value))
        elif len(value) <= 0xFFFF:
            header = _SHORT_HEADER.pack(group, element, vr.encode(), len(value))
        else:
            return False  # pydicom warns and writes it as UN
        self.parts += (header, value)
        return True

    def sequence(self, tag: int, elem: DataElement, encodings: list[str]) -> None:
        """``write_data_element`` for an SQ element, items written by ``dataset``."""
        parts = self.parts
        header = len(parts)
        parts.append(b"")  # the header, once the length is known
        size = 0
        items = elem.value
        if items:
            for item in items:
                parts.append(_ITEM_TAG)
                at = len(parts)
                parts.append(_UNDEFINED_UL)
                self.dataset(item, encodings)
                if getattr(item, "is_undefined_length_sequence_item", False):
                    parts.append(_ITEM_DELIMITER)
                else:
                    parts[at] = _UL.pack(sum(map(len, parts[at + 1 :])))
            size = sum(map(len, parts[header + 1 :]))
        undefined = elem.is_undefined_length
        length = _UNDEFINED if undefined else size
        if self.implicit:
            parts[header] = _IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, length)
        else:
            parts[header] = _LONG_HEADER.pack(tag >> 16, tag & 0xFFFF, b"SQ", length)
        if undefined:
            parts.append(_SEQ_DELIMITER)

    def pixel_data(self, elem: DataElement) -> bool:
        """Native or encapsulated Pixel Data held as bytes, without copying it to a buffer."""
        value = elem.value
        vr = elem.VR
        if type(value) is not bytes or not value or vr not in _PIXEL_VRS:
            return False
        if not self.implicit and len(vr) != 2:
            return False
        undefined = elem.is_undefined_length
        if undefined and not value.startswith(_ITEM_TAG):
            return False  # pydicom raises its own error for this
        odd = len(value) % 2
        length = _UNDEFINED if undefined else len(value) + odd
        if self.implicit:
            self.parts.append(_IMPLICIT_HEADER.pack(0x7FE0, 0x0010, length))
        else:
            self.parts.append(_LONG_HEADER.pack(0x7FE0, 0x0010, vr.encode(), length))
        self.parts.append(value)
        if odd:
            self.parts.append(b"\x00")
        if undefined:
            self.parts.append(_SEQ_DELIMITER)
        return True


def fast_part10(ds: Dataset) -> bytes | None:
    """Encode ``ds`` (with ``ds.file_meta`` as ``to_part10_bytes`` builds it) like
    ``ds.save_as(buf, enforce_file_format=True)``; None where pydicom must do it."""
    meta = ds.file_meta
    ts = meta.get("TransferSyntaxUID")
    if not isinstance(ts, str):
        return None
    syntax = _little_endian_syntax(ts)
    if syntax is None:
        return None
    implicit, deflated = syntax
    if any(tag >> 16 in (0, 2) for tag in ds._dict):
        return None
    preamble = getattr(ds, "preamble", None)
    if preamble and (type(preamble) is not bytes or len(preamble) != 128):
        return None
    # dcmwrite updates the media storage UIDs of its copy of the meta from the dataset
    if ds.get("SOPClassUID", None) != meta.get("MediaStorageSOPClassUID"):
        return None
    if ds.get("SOPInstanceUID", None) != meta.get("MediaStorageSOPInstanceUID"):
        return None
    head = file_meta_bytes(meta)
    if head is None:
        return None
    if "PixelData" in ds:  # as dcmwrite does (this converts a raw Pixel Data element)
        ds["PixelData"].is_undefined_length = UID(ts).is_compressed
    writer = _Writer(implicit)
    writer.parts += (preamble or b"\x00" * 128, b"DICM", head)
    writer.dataset(ds)
    if deflated:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = compressor.compress(b"".join(writer.parts[3:])) + compressor.flush()
        if len(body) % 2:
            body += b"\x00"
        del writer.parts[3:]
        writer.parts.append(body)
    return b"".join(writer.parts)  # the one copy of the values
