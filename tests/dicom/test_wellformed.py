"""The well-formedness rules (pair.dicom.wellformed): each refusal names the element."""

from __future__ import annotations

import struct

import pytest

from pair.dicom import wellformed
from pair.dicom.parse import InvalidInstance, parse_bytes
from tests.security.fuzz_corpus import (
    _elem,
    _find,
    _nested,
    base_dataset,
    encode,
    set_value,
)


def _check(data: bytes) -> None:
    parsed = parse_bytes(data)
    wellformed.check(parsed.dataset, parsed.transfer_syntax_uid)


def _refusal(data: bytes) -> InvalidInstance:
    with pytest.raises(InvalidInstance) as info:
        _check(data)
    return info.value


def test_a_valid_instance_passes() -> None:
    _check(encode(base_dataset(1)))


@pytest.mark.parametrize(
    ("group", "elem", "vr", "value", "named"),
    [
        (0x0020, 0x0013, b"IS", b"abc ", "InstanceNumber (0020,0013) value 'abc'"),
        (0x0020, 0x0013, b"IS", b"4294967296", "InstanceNumber (0020,0013) value '4294967296'"),
        (0x0028, 0x1050, b"DS", b"nan ", "WindowCenter (0028,1050) value 'nan'"),
        (0x0028, 0x0030, b"DS", b"1\\x", "PixelSpacing (0028,0030) value 'x'"),
        (0x0028, 0x1050, b"FD", b"40", "WindowCenter (0028,1050) has 2 bytes, not a multiple of 8"),
        (0x0020, 0x0013, b"ZZ", b"123 ", "InstanceNumber (0020,0013) cannot be decoded (VR 'ZZ')"),
    ],
)
def test_malformed_elements_are_named(
    group: int, elem: int, vr: bytes, value: bytes, named: str
) -> None:
    exc = _refusal(set_value(encode(base_dataset(2)), group, elem, vr, value))
    assert exc.reason_code == "malformed_element"
    assert exc.message.startswith(named)


@pytest.mark.parametrize(
    ("keyword", "value", "named"),
    [
        ("BitsAllocated", 0, "BitsAllocated (0028,0100) is 0; allowed: 1, 8, 16, 32"),
        ("BitsAllocated", 13, "BitsAllocated (0028,0100) is 13"),
        ("Rows", 0, "Rows (0028,0010) is 0; allowed: 1 to 65535"),
        ("SamplesPerPixel", 0, "SamplesPerPixel (0028,0002) is 0; allowed: 1"),
        ("BitsStored", 17, "BitsStored (0028,0101) is 17; allowed: 1 to 16"),
        ("PixelRepresentation", 2, "PixelRepresentation (0028,0103) is 2"),
        ("PhotometricInterpretation", "BOGUS", "PhotometricInterpretation (0028,0004) is 'BOGUS'"),
        ("PhotometricInterpretation", "RGB", "SamplesPerPixel (0028,0002) is 1; allowed: 3"),
        ("PhotometricInterpretation", "PALETTE COLOR", "PhotometricInterpretation PALETTE COLOR"),
    ],
)
def test_pixel_module_nonsense_is_refused(keyword: str, value: object, named: str) -> None:
    ds = base_dataset(3)
    setattr(ds, keyword, value)
    exc = _refusal(encode(ds))
    assert exc.reason_code == "invalid_pixel_module"
    assert exc.message.startswith(named), exc.message


def test_sequence_depth_limit_comes_from_the_data_file() -> None:
    limit = wellformed.rules().max_sequence_depth
    assert limit == 32
    leaf = _elem(0x0008, 0x1150, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0")

    def nested(depth: int) -> bytes:
        data = encode(base_dataset(4 + depth))
        start, _, _ = _find(data, 0x0010, 0x0010)
        return data[:start] + _nested(depth, leaf) + data[start:]

    _check(nested(limit))
    exc = _refusal(nested(limit + 1))
    assert exc.reason_code == "sequence_too_deep"
    assert exc.message.startswith("ReferencedImageSequence (0008,1140)")


def test_native_pixels_under_a_compressed_transfer_syntax_are_refused() -> None:
    data = encode(base_dataset(5))
    pos = data.index(b"\x02\x00\x10\x00UI")
    old = struct.unpack_from("<H", data, pos + 6)[0]
    ts = b"1.2.840.10008.1.2.4.50\0"[: len(b"1.2.840.10008.1.2.4.50")]
    ts += b"\0" * (len(ts) % 2)
    data = (
        data[:pos] + b"\x02\x00\x10\x00UI" + struct.pack("<H", len(ts)) + ts + data[pos + 8 + old :]
    )
    group_len = struct.unpack_from("<I", data, 140)[0] + len(ts) - old
    data = data[:140] + struct.pack("<I", group_len) + data[144:]
    exc = _refusal(data)
    assert exc.reason_code == "transfer_syntax_mismatch"
    assert exc.message.startswith("PixelData (7FE0,0010) does not match transfer syntax")


def test_the_dataset_is_not_modified() -> None:
    parsed = parse_bytes(encode(base_dataset(6)))
    before = {tag: type(elem).__name__ for tag, elem in parsed.dataset._dict.items()}
    wellformed.check(parsed.dataset, parsed.transfer_syntax_uid)
    assert {tag: type(e).__name__ for tag, e in parsed.dataset._dict.items()} == before
