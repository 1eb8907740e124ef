"""A deterministic corpus of malformed DICOM instances (issue 11's fuzz corpus).

Every case starts from one small, valid CT instance and breaks it in one way: a bad VR, a bad
length, truncation, IS/DS garbage, deep sequences, pixel-module nonsense, a transfer syntax that
does not match the encoding, or bit flips from a fixed seed. Mutations work on the encoded bytes
(so the node sees exactly what a broken sender would send); nothing here is random at import.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

SEED = 11
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"SV",
    b"UV",
}


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes


def base_dataset(n: int) -> Dataset:
    """Valid instance number ``n``: unique UIDs derived from ``n``, no PHI beyond a fake name."""
    root = "1.2.826.0.1.3680043.10.1011"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(f"{root}.3.{n}")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{root}.3.{n}"
    ds.StudyDate = "20200415"
    ds.Modality = "CT"
    ds.StudyDescription = "FUZZ"
    ds.PatientName = "FUZZ^CASE"
    ds.PatientID = "FUZZ0001"
    ds.SliceThickness = "5.0"
    ds.StudyInstanceUID = f"{root}.1.{n}"
    ds.SeriesInstanceUID = f"{root}.2.{n}"
    ds.StudyID = "1"
    ds.SeriesNumber = "2"
    ds.InstanceNumber = "123"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.PixelSpacing = ["1.0", "1.0"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.PixelData = (np.arange(64, dtype=np.uint16) * 50).tobytes()
    return ds


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _elem(group: int, elem: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little-endian element; ``length`` overrides the encoded length."""
    n = len(value) if length is None else length
    head = struct.pack("<HH", group, elem) + vr
    if vr in _LONG_VRS or len(vr) != 2 or not vr.isalpha() or not vr.isupper():
        return head + b"\0\0" + struct.pack("<I", n & 0xFFFFFFFF) + value
    return head + struct.pack("<H", n & 0xFFFF) + value


def _find(data: bytes, group: int, elem: int) -> tuple[int, int, int]:
    """(start, value offset, value length) of a top-level explicit VR LE element."""
    pos = data.index(struct.pack("<HH", group, elem), 132)
    vr = data[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        return pos, pos + 12, struct.unpack_from("<I", data, pos + 8)[0]
    return pos, pos + 8, struct.unpack_from("<H", data, pos + 6)[0]


def replace_element(data: bytes, group: int, elem: int, new: bytes) -> bytes:
    start, off, length = _find(data, group, elem)
    return data[:start] + new + data[off + length :]


def set_value(data: bytes, group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    return replace_element(data, group, elem, _elem(group, elem, vr, value))


def _pixel_nonsense(n: int) -> Iterator[Case]:
    us = [
        ("bits_allocated", 0x0100, [0, 1, 7, 13, 33, 64, 65535]),
        ("bits_stored", 0x0101, [0, 17, 40]),
        ("high_bit", 0x0102, [16, 30, 65535]),
        ("pixel_representation", 0x0103, [2, 9]),
        ("rows", 0x0010, [0, 65535]),
        ("columns", 0x0011, [0, 65535]),
        ("samples_per_pixel", 0x0002, [0, 2, 3, 4, 9]),
    ]
    for name, elem, values in us:
        for v in values:
            yield Case(
                f"{name}_{v}",
                set_value(encode(base_dataset(n)), 0x0028, elem, b"US", struct.pack("<H", v)),
            )
            n += 1
    for pi in ["BOGUS", "RGB", "PALETTE COLOR", "YBR_FULL", "MONOCHROME3", "", "\\\\\\"]:
        ds = base_dataset(n)
        ds.PhotometricInterpretation = pi
        yield Case(f"photometric_{pi or 'empty'}", encode(ds))
        n += 1
    for frames in [b"0 ", b"-1", b"abc ", b"99999999", b"2 "]:
        ds = base_dataset(n)
        data = encode(ds)
        start, _, _ = _find(data, 0x0028, 0x0010)
        data = data[:start] + _elem(0x0028, 0x0008, b"IS", frames) + data[start:]
        yield Case(f"number_of_frames_{frames.strip().decode()}", data)
        n += 1
    for pc in [1, 7]:
        ds = base_dataset(n)
        ds.PlanarConfiguration = pc
        yield Case(f"planar_configuration_{pc}", encode(ds))
        n += 1
    ds = base_dataset(n)
    ds.PixelData = b"\x01" * 17  # odd length, too short
    yield Case("pixel_data_short", encode(ds))
    n += 1
    ds = base_dataset(n)
    del ds.Rows
    yield Case("rows_missing", encode(ds))
    n += 1
    ds = base_dataset(n)
    ds.VOILUTFunction = "NONSENSE"
    ds.WindowWidth = "0"
    yield Case("window_width_zero", encode(ds))
    n += 1
    ds = base_dataset(n)
    ds.RescaleSlope = "0"
    yield Case("rescale_slope_zero", encode(ds))


def _text_numbers(n: int) -> Iterator[Case]:
    targets = [
        ("instance_number", 0x0020, 0x0013, b"IS"),
        ("series_number", 0x0020, 0x0011, b"IS"),
        ("slice_thickness", 0x0018, 0x0050, b"DS"),
        ("window_center", 0x0028, 0x1050, b"DS"),
        ("window_width", 0x0028, 0x1051, b"DS"),
        ("rescale_slope", 0x0028, 0x1053, b"DS"),
        ("pixel_spacing", 0x0028, 0x0030, b"DS"),
    ]
    garbage = [
        b"abc ",
        b"1.5 ",
        b"99999999999999999999",
        b"nan ",
        b"1e999 ",
        b"\xff\xfe",
        b"--",
        b"1\\x",
    ]
    for name, group, elem, vr in targets:
        for g in garbage:
            yield Case(f"{name}_{g!r}", set_value(encode(base_dataset(n)), group, elem, vr, g))
            n += 1


def _bad_vrs(n: int) -> Iterator[Case]:
    targets = [(0x0020, 0x0013), (0x0008, 0x0060), (0x0028, 0x0010), (0x0028, 0x1050)]
    for group, elem in targets:
        for vr in [b"ZZ", b"\0\0", b"xx", b"UL", b"SQ", b"OB", b"FD", b"AT"]:
            data = encode(base_dataset(n))
            _, off, length = _find(data, group, elem)
            value = data[off : off + length]
            yield Case(
                f"vr_{group:04x}{elem:04x}_{vr!r}",
                replace_element(data, group, elem, _elem(group, elem, vr, value)),
            )
            n += 1


def _bad_lengths(n: int) -> Iterator[Case]:
    for group, elem in [(0x0008, 0x0060), (0x0020, 0x0013), (0x0028, 0x0010), (0x0010, 0x0010)]:
        for length in [0xFFFF, 1, 3, 5000]:
            data = encode(base_dataset(n))
            start, off, actual = _find(data, group, elem)
            value = data[off : off + actual]
            new = data[start : off - 2] + struct.pack("<H", length) + value
            yield Case(
                f"length_{group:04x}{elem:04x}_{length}", data[:start] + new + data[off + actual :]
            )
            n += 1
    for length in [0xFFFFFFFF, 0xFFFFFFF0, 3, 129, 1 << 20]:
        data = encode(base_dataset(n))
        start, off, _ = _find(data, 0x7FE0, 0x0010)
        yield Case(
            f"length_pixel_data_{length}", data[: off - 4] + struct.pack("<I", length) + data[off:]
        )
        n += 1


def _truncations(n: int) -> Iterator[Case]:
    for frac in range(1, 25):
        data = encode(base_dataset(n))
        cut = 132 + (len(data) - 132) * frac // 25
        yield Case(f"truncated_{frac}_of_25", data[:cut])
        n += 1


def _nested(depth: int, leaf: bytes) -> bytes:
    """``depth`` levels of undefined-length ReferencedImageSequence items around ``leaf``."""
    body = leaf
    for _ in range(depth):
        item = (
            struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            + body
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        )
        body = (
            struct.pack("<HH", 0x0008, 0x1140)
            + b"SQ\0\0"
            + struct.pack("<I", 0xFFFFFFFF)
            + item
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        )
    return body


def _deep_sequences(n: int) -> Iterator[Case]:
    leaf = _elem(0x0008, 0x1150, b"UI", CTImageStorage.encode() + b"\0")
    for depth in [2, 16, 32, 33, 64, 128, 200, 500]:
        data = encode(base_dataset(n))
        start, _, _ = (
            _find(data, 0x0008, 0x1030)
            if b"\x08\x00\x30\x10" in data
            else _find(data, 0x0010, 0x0010)
        )
        yield Case(f"sequence_depth_{depth}", data[:start] + _nested(depth, leaf) + data[start:])
        n += 1
    data = encode(base_dataset(n))
    start, _, _ = _find(data, 0x0010, 0x0010)
    unterminated = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
    yield Case("sequence_unterminated", data[:start] + unterminated + data[start:])


def _transfer_syntax(n: int) -> Iterator[Case]:
    for label, ts in [
        ("implicit", "1.2.840.10008.1.2"),
        ("big_endian", "1.2.840.10008.1.2.2"),
        ("deflated", "1.2.840.10008.1.2.1.99"),
        ("jpeg_baseline", "1.2.840.10008.1.2.4.50"),
        ("jpeg_ls", "1.2.840.10008.1.2.4.80"),
        ("jpeg2000", "1.2.840.10008.1.2.4.90"),
        ("rle", "1.2.840.10008.1.2.5"),
        ("unknown", "1.2.3.4.5.6"),
        ("garbage", "not-a-uid"),
    ]:
        ds = base_dataset(n)
        data = encode(ds)
        value = ts.encode() + (b"\0" if len(ts) % 2 else b"")
        yield Case(f"ts_mismatch_{label}", _set_meta_ts(data, value))
        n += 1
    for label, ts in [("jpeg_baseline", "1.2.840.10008.1.2.4.50"), ("rle", "1.2.840.10008.1.2.5")]:
        ds = base_dataset(n)
        ds.file_meta.TransferSyntaxUID = UID(ts)
        frag = b"\xff\xd8garbage!" if label.startswith("jpeg") else b"\x00" * 64
        ds.PixelData = b"".join(
            [
                struct.pack("<HHI", 0xFFFE, 0xE000, 0),
                struct.pack("<HHI", 0xFFFE, 0xE000, len(frag)),
                frag,
            ]
        )
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        yield Case(f"encapsulated_garbage_{label}", encode(ds))
        n += 1


def _set_meta_ts(data: bytes, value: bytes) -> bytes:
    pos = data.index(b"\x02\x00\x10\x00UI")
    old_len = struct.unpack_from("<H", data, pos + 6)[0]
    new = (
        data[:pos]
        + b"\x02\x00\x10\x00UI"
        + struct.pack("<H", len(value))
        + value
        + data[pos + 8 + old_len :]
    )
    # fix the file meta group length (0002,0000), UL at offset 132
    group_len = struct.unpack_from("<I", new, 140)[0] + len(value) - old_len
    return new[:140] + struct.pack("<I", group_len) + new[144:]


def _bit_flips(n: int, count: int) -> Iterator[Case]:
    rng = random.Random(SEED)
    for i in range(count):
        data = bytearray(encode(base_dataset(n + i)))
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(132, len(data))
            data[pos] ^= 1 << rng.randrange(8)
        yield Case(f"bitflip_{i:03d}", bytes(data))


def corpus(variant: int = 0) -> list[Case]:
    """All cases, in a fixed order, each with its own study/series/SOP UIDs; another
    ``variant`` gives the same cases under other UIDs (to send them again elsewhere)."""
    builders: list[Callable[[int], Iterator[Case]]] = [
        _pixel_nonsense,
        _text_numbers,
        _bad_vrs,
        _bad_lengths,
        _truncations,
        _deep_sequences,
        _transfer_syntax,
    ]
    cases: list[Case] = []
    for k, build in enumerate(builders, 1):
        cases.extend(build(variant * 10000 + k * 1000))
    cases.extend(_bit_flips(variant * 10000 + 9000, 60))
    return cases
