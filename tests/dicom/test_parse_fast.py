"""``parse_bytes`` (tag lookups, raw pixel-module reads) decides exactly as the keyword-based
reference ``_parse_bytes_pydicom``: same acceptance, transfer syntax and re-encoded bytes, or
the same rejection reason and message, on valid, damaged and random-corrupted inputs."""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from pair.dicom.parse import (
    InvalidInstance,
    _parse_bytes_pydicom,
    _to_part10_bytes_pydicom,
    parse_bytes,
)
from tests.factories import ct_instance


def outcome(parse: Callable[[bytes], object], data: bytes) -> tuple[str, ...]:
    try:
        parsed = parse(data)
    except InvalidInstance as exc:
        return ("rejected", exc.reason_code, exc.message)
    ts = parsed.transfer_syntax_uid  # type: ignore[attr-defined]
    try:  # the parsed dataset as it is: what ingest then encodes
        encoded = _to_part10_bytes_pydicom(parsed.dataset, ts).hex()  # type: ignore[attr-defined]
    except Exception as exc:
        encoded = type(exc).__name__
    return ("ok", ts, encoded)


def assert_same_outcome(data: bytes) -> tuple[str, ...]:
    new, ref = outcome(parse_bytes, data), outcome(_parse_bytes_pydicom, data)
    assert new == ref
    return new


def _ct(size: int = 8, ts: str = ExplicitVRLittleEndian, **changes: object) -> Dataset:
    """A CT instance as read from a file in ``ts``, then changed (raw elements stay raw)."""
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=size)
    ds = pydicom.dcmread(io.BytesIO(_to_part10_bytes_pydicom(ds, ts)))
    for k, v in changes.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    return ds


def _raw(ds: Dataset, tag: int, vr: str | None, value: bytes) -> Dataset:
    ds._dict[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)
    return ds


def _cases() -> list[tuple[Dataset, str]]:
    ex = ExplicitVRLittleEndian
    multi_frame = _ct(NumberOfFrames="2")
    colour = _ct(SamplesPerPixel=3)
    implicit_rows = _ct(ts=ImplicitVRLittleEndian)
    implicit_rows._dict[BaseTag(0x00280010)] = RawDataElement(
        BaseTag(0x00280010), None, 2, b"\x09\x00", 0, True, True
    )
    return [
        (_ct(), ex),
        (_ct(ts=ImplicitVRLittleEndian), ImplicitVRLittleEndian),
        (_ct(ts=ExplicitVRBigEndian), ExplicitVRBigEndian),
        (_raw(_ct(ts=ExplicitVRBigEndian), 0x00280010, "US", b"\x00\x08"), ExplicitVRBigEndian),
        (_ct(Rows=None), ex),
        (_ct(BitsAllocated=None), ex),
        (_ct(SamplesPerPixel=None), ex),
        (colour, ex),
        (implicit_rows, ImplicitVRLittleEndian),
        (multi_frame, ex),
        (_ct(NumberOfFrames="0"), ex),
        (_ct(StudyInstanceUID=None), ex),
        (_ct(SOPClassUID="1.2.03"), ex),
        (_ct(SeriesInstanceUID="1.2.3\\1.2.4"), ex),
        (_raw(_ct(), 0x00280010, "US", b"\x08\x00\x08\x00"), ex),  # Rows, VM 2
        (_raw(_ct(), 0x00280010, "US", b""), ex),  # Rows, empty
        (_raw(_ct(), 0x00280011, "SS", b"\x08\x00"), ex),  # Columns with another VR
        (_raw(_ct(), 0x00280100, "US", b"\x10\x00\x00"), ex),  # odd length
        (_raw(_ct(), 0x00280008, "IS", b"x "), ex),  # NumberOfFrames not a number
    ]


@pytest.mark.parametrize("index", range(len(_cases())))
def test_damaged_datasets(index: int) -> None:
    ds, ts = _cases()[index]
    assert_same_outcome(_to_part10_bytes_pydicom(ds, ts))


def test_outcomes_cover_each_reason() -> None:
    seen = {assert_same_outcome(_to_part10_bytes_pydicom(ds, ts))[1] for ds, ts in _cases()}
    reasons = {"missing_uid", "invalid_uid", "invalid_pixel_module", "unreadable", "truncated"}
    assert reasons <= seen


def test_file_level_damage() -> None:
    data = _to_part10_bytes_pydicom(_ct(size=16), ExplicitVRLittleEndian)
    compressed = _ct(size=16)
    compressed.compress(RLELossless)
    rle = _to_part10_bytes_pydicom(compressed, RLELossless)
    meta_end = 132 + 12 + struct.unpack_from("<L", data, 140)[0]
    seen = set()
    for damaged in (
        b"",
        data[:100],
        data[:-500],
        data[:-1],
        data[128:],  # no preamble (lenient read)
        data[:meta_end] + b"\x08\x00\x16\x00UI\xff\xff" + data[meta_end + 8 :],
        rle[:-100],
        rle,
    ):
        seen.add(assert_same_outcome(damaged)[1])
    assert {"not_dicom", "truncated"} <= seen


def test_random_corruption(shared_data: Path) -> None:
    rng = random.Random(7)
    inputs = [_to_part10_bytes_pydicom(_ct(size=8), ExplicitVRLittleEndian)]
    inputs.append(_to_part10_bytes_pydicom(_ct(size=8), ImplicitVRLittleEndian))
    inputs.append((shared_data / "dicom" / "pydicom_CT_small.dcm").read_bytes()[:6000])
    seen = set()
    for data in inputs:
        for _ in range(120):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(132, min(len(damaged), 2000))
                damaged[at] = rng.randrange(256)
            if rng.random() < 0.3:
                damaged = damaged[: rng.randrange(132, len(damaged))]
            seen.add(assert_same_outcome(bytes(damaged))[1])
    assert len(seen) >= 3
