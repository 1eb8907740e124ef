"""The fast Part 10 encoder writes exactly the bytes pydicom's ``dcmwrite`` writes.

Every case encodes a deep copy of the same dataset twice, with the reference
(``_to_part10_bytes_pydicom``) and with the fast encoder, and compares the bytes. Inputs: the
shared real files, benchmark-like CT/CR, ``pair synth`` output, each transfer syntax ingest
accepts, the real de-identifier's output for all of them, hand-made edge cases and random
datasets.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import random
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom.dsutils import decode, encode

from pair.accounts import service as accounts
from pair.core import fastpaths
from pair.core.config import get_settings
from pair.core.node import open_node
from pair.deid.service import deidentifier_for
from pair.dicom import parse
from pair.dicom.encode import fast_part10
from pair.dicom.parse import (
    _to_part10_bytes_pydicom,
    parse_bytes,
    part10_file_meta,
    to_part10_bytes,
    validate_dataset,
)
from pair.synth.generator import generate
from tests.factories import INGEST_TRANSFER_SYNTAXES, ct_instance

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import common

Deid = Callable[[Dataset], Dataset]
LITTLE_ENDIAN = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)


def _first_difference(a: bytes, b: bytes) -> str:
    i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return f"lengths {len(a)} and {len(b)}, first difference at byte {i}: {a[i - 8 : i + 24]!r}"


@contextlib.contextmanager
def _fast_paths(on: bool) -> Iterator[None]:
    """PAIR_FAST_PATHS for this process, as ``open_node`` sets it, restored afterwards."""
    before = fastpaths.enabled()
    fastpaths.configure(on)
    try:
        yield
    finally:
        fastpaths.configure(before)


def assert_same(ds: Dataset, ts: str, *, fast: bool = True) -> bytes:
    """Reference and fast bytes are equal; with ``fast`` the fast path really wrote them; the
    public encoder gives the same bytes with the fast paths switched on and off."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _to_part10_bytes_pydicom(copy.deepcopy(ds), ts)
        work = copy.deepcopy(ds)
        work.file_meta = part10_file_meta(work, ts)
        got = fast_part10(work)
        public = copy.deepcopy(ds)
        via_api = to_part10_bytes(public, ts)
        with _fast_paths(False):
            switched_off = to_part10_bytes(copy.deepcopy(ds), ts)
    if fast:
        assert got is not None, f"fast path declined {ts}"
    if got is not None:
        assert got == expected, _first_difference(got, expected)
    assert via_api == expected, _first_difference(via_api, expected)
    assert switched_off == expected, _first_difference(switched_off, expected)
    assert public.file_meta.TransferSyntaxUID == ts
    return expected


@pytest.fixture(scope="module")
def deidentify(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deid]:
    """The real de-identifier of a facility, as ingest uses it (one node for the module)."""
    node = open_node(tmp_path_factory.mktemp("codec") / "node")
    try:
        with node.db.session() as s:
            facility = accounts.create_facility(s, "Codec test", "CODEC")
            engine = deidentifier_for(s, node.settings, facility)
            yield lambda ds: engine.deidentify(ds).dataset
    finally:
        node.close()


def _check_ingest(data: bytes, deidentify: Deid, targets: tuple[str, ...] = ()) -> None:
    """Parse, encode as parsed and to ``targets``; de-identify and encode the result."""
    parsed = parse_bytes(data)
    ts = parsed.transfer_syntax_uid
    fast = UID(ts).is_little_endian
    assert_same(parsed.dataset, ts, fast=fast)
    for target in targets:
        assert_same(parse_bytes(data).dataset, target)
    decoded = parse_bytes(data).dataset
    for _ in decoded.iterall():  # every element decoded: the decoded-element writers
        pass
    assert_same(decoded, ts, fast=fast)
    out = deidentify(parse_bytes(data).dataset)
    stored = assert_same(out, ts, fast=fast)
    assert_same(parse_bytes(stored).dataset, ts, fast=fast)  # what retrieve reads back


def test_shared_files(shared_data: Path, deidentify: Deid) -> None:
    files = sorted((shared_data / "dicom").glob("*.dcm"))
    syntaxes = set()
    for path in files:
        data = path.read_bytes()
        syntaxes.add(parse_bytes(data).transfer_syntax_uid)
        _check_ingest(data, deidentify, targets=(ImplicitVRLittleEndian, ExplicitVRLittleEndian))
        # retrieve transcodes compressed instances to explicit VR little endian
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
            assert_same(ds, ExplicitVRLittleEndian)
    assert len(files) >= 5  # the five vendored files (tests/data/README.md)
    assert {ExplicitVRLittleEndian, JPEGBaseline8Bit} <= syntaxes


def test_benchmark_ct_and_cr(deidentify: Deid) -> None:
    rng = np.random.default_rng(5)
    phi = {"PatientName": "DOE^JANE", "PatientID": "MRN77", "PatientBirthDate": "19600101"}
    study, series = generate_uid(), generate_uid()
    for ds in (
        common.ct_slice(rng, study, series, generate_uid(), 3, phi),
        common.cr_image(rng, generate_uid(), generate_uid(), generate_uid(), phi, 256),
    ):
        _check_ingest(_to_part10_bytes_pydicom(ds, ExplicitVRLittleEndian), deidentify)


@pytest.fixture(scope="module")
def synth_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("synth")
    generate(out, 1, 2, 3, workers=1, ct_slices=4, ct_size=64, cxr_size=128)
    return sorted(out.rglob("*.dcm"))


def test_synth_output(synth_files: list[Path], deidentify: Deid) -> None:
    modalities = set()
    for path in synth_files:
        data = path.read_bytes()
        modalities.add(str(parse_bytes(data).dataset.Modality))
        _check_ingest(data, deidentify)
    assert {"CT", "DX"} <= modalities


@pytest.mark.parametrize("ts", INGEST_TRANSFER_SYNTAXES)
def test_transfer_syntaxes(ts: str, deidentify: Deid) -> None:
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=64)
    if UID(ts).is_compressed:
        ds.compress(ts)
    data = _to_part10_bytes_pydicom(ds, ts)
    assert parse_bytes(data).transfer_syntax_uid == ts
    _check_ingest(data, deidentify)


def test_big_endian_is_left_to_pydicom() -> None:
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=8)
    parsed = parse_bytes(_to_part10_bytes_pydicom(ds, ExplicitVRBigEndian))
    assert_same(parsed.dataset, ExplicitVRBigEndian, fast=False)
    ds.file_meta = part10_file_meta(ds, ExplicitVRBigEndian)
    assert fast_part10(ds) is None


# ---- hand-made edge cases --------------------------------------------------------------------


def _item(**values: object) -> Dataset:
    item = Dataset()
    for k, v in values.items():
        setattr(item, k, v)
    return item


def edge_dataset(size: int = 4) -> Dataset:
    """Nested, private, odd, multi-valued, empty and ambiguous-VR elements of most VRs."""
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=size)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "X"]
    ds.OtherPatientIDs = ["A1", "B22", "C333"]
    ds.AdditionalPatientHistory = "odd"
    ds.StudyComments = ""
    ds.PatientWeight = None
    ds.PixelSpacing = ["0.5", "0.25"]
    ds.SliceThickness = "1.250"
    ds.ReferencedFrameNumber = [1, 2, 3]
    ds.FrameIncrementPointer = [0x00181063, 0x00209153]
    ds.LargestImagePixelValue = 400  # US or SS
    ds.SmallestImagePixelValue = -1000
    ds.RedPaletteColorLookupTableDescriptor = [4096, 0, 16]  # US or SS, VM 3
    ds.TimeRange = [1.5, -2.25]  # FD, VM 2
    ds.ExaminedBodyThickness = 0.5  # FL
    ds.TagAngleSecondAxis = -7  # SS
    ds.ReferencePixelX0 = -5  # SL
    ds.SimpleFrameList = [70000, 1]  # UL
    ds.FileOffsetInContainer = 2**40  # UV
    ds.SelectorSVValue = [-(2**40), 3]  # SV
    ds.SelectorATValue = [0x00100010, 0x00100020]  # AT
    ds.DataElement = 0x7FE00010  # AT, VM 1
    ds.LongCodeValue = "long code value"  # UC
    ds.StrainAdditionalInformation = "unlimited text"  # UT
    ds.RetrieveURL = "http://example.org/ab"  # UR
    ds.VerticesOfThePolygonalOutline = b"\x00\x00\x80\x3f" * 3  # OF
    ds.RedPaletteColorLookupTableData = b"\x01\x00\x02\x00"  # OW
    ds.SelectorUNValue = b"\x01\x02\x03"  # UN, odd
    ds.SpacingBetweenSlices = None  # DS, empty
    ds.add_new(0x00209113, "SQ", [])  # empty sequence
    ds.ReferencedImageSequence = [
        _item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2", ReferencedSOPInstanceUID="1.2.3"),
        _item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2", ReferencedFrameNumber=[1, 2]),
    ]
    inner = _item(CodeValue="T-D3000", CodingSchemeDesignator="SRT", CodeMeaning="Chest")
    ds.AnatomicRegionSequence = [inner]
    procedure = _item(CodeValue="XYZ", CodeMeaning="odd meaning")
    procedure.ProcedureCodeSequence = [_item(CodeValue="1", CodeMeaning="nested twice")]
    ds.RequestAttributesSequence = [procedure, _item(RequestedProcedureID="R1")]
    ds["RequestAttributesSequence"].is_undefined_length = True
    procedure.is_undefined_length_sequence_item = True
    block = ds.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x10, "LO", "private text")
    block.add_new(0x11, "OB", b"\x00\x01\x02")
    block.add_new(0x12, "UL", [1, 2, 3])
    block.add_new(0x13, "SQ", [_item(PatientComments="inside private")])
    block.add_new(0x14, "DS", "3.14")
    return ds


def _text_dataset(charset: str) -> Dataset:
    ds = ct_instance(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        size=2,
        patient={"PatientName": "Müller^Jörg", "InstitutionName": "Klinikum Köln"},
    )
    ds.SpecificCharacterSet = charset
    ds.StudyDescription = "Thorax ñ"
    ds.PatientComments = ["ü", "plain"]
    item = _item(SpecificCharacterSet="ISO_IR 100", PatientName="Ærø^Åse")
    ds.OtherPatientIDsSequence = [item, _item(PatientID="inherits")]
    return ds


def _odd_raw(ds: Dataset) -> None:
    """Raw values as a non-conformant sender or another reader may leave them: odd lengths
    (never padded), undefined lengths, encapsulated Pixel Data inside an item."""
    implicit = bool(ds.original_encoding[0])
    fragments = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x02\x00\x00\x00\xff\xd9"
    raw = (
        (0x00081030, "LO", b"odd", 3),
        (0x00091010, "LO", b"X", 1),
        (0x00191011, "OB", b"\x01\x02\x03", 3),
        (0x00191012, "OB", fragments, 0xFFFFFFFF),
        (0x00191013, "UN", b"\x01\x02", 0xFFFFFFFF),
    )
    for tag, vr, value, length in raw:
        ds._dict[BaseTag(tag)] = RawDataElement(
            BaseTag(tag), None if implicit else vr, length, value, 0, implicit, True
        )
    icon = Dataset()
    icon.set_original_encoding(implicit, True)
    pixels = BaseTag(0x7FE00010)
    icon._dict[pixels] = RawDataElement(
        pixels, None if implicit else "OB", 0xFFFFFFFF, fragments, 0, implicit, True
    )
    ds.IconImageSequence = [icon]


@pytest.mark.parametrize("ts", LITTLE_ENDIAN)
def test_edge_cases(ts: str, deidentify: Deid) -> None:
    built = edge_dataset()
    assert_same(built, ts)  # decoded from scratch: pydicom's conversion path
    data = _to_part10_bytes_pydicom(edge_dataset(), ts)
    for target in LITTLE_ENDIAN:
        assert_same(parse_bytes(data).dataset, target)
    ds = parse_bytes(data).dataset
    ds.RequestAttributesSequence[0].CodeMeaning = "changed"  # a decoded item inside
    ds.PatientName = "NEW^NAME"
    ds.LargestImagePixelValue  # noqa: B018  converts an ambiguous raw element
    ds.ReferencedImageSequence.append(_item(ReferencedSOPInstanceUID="9.8.7"))
    assert_same(ds, ts)
    ds = parse_bytes(data).dataset
    decoded = sum(1 for _ in ds.iterall())  # decodes every element, nested ones too
    assert decoded > 60
    assert_same(ds, ts)  # each VR through the decoded-element writers
    ds = parse_bytes(data).dataset
    _odd_raw(ds)
    ds.file_meta = FileMetaDataset()
    assert_same(ds, ts)
    _check_ingest(data, deidentify)


@pytest.mark.parametrize("charset", ["ISO_IR 192", "ISO_IR 100", ["", "ISO 2022 IR 87"]])
@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_character_sets(charset: str, ts: str) -> None:
    if isinstance(charset, list):
        ds = _text_dataset("ISO_IR 192")
        ds.SpecificCharacterSet = charset
        ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
        ds.StudyDescription = "plain"
        ds.PatientComments = ["a", "b"]
        ds.OtherPatientIDsSequence = [_item(PatientID="x")]
    else:
        ds = _text_dataset(charset)
    data = assert_same(ds, ts)
    parsed = parse_bytes(data).dataset
    assert_same(parsed, ts)
    parsed.StudyDescription = "changed ASCII"
    parsed.InstitutionName  # noqa: B018  converted, written through pydicom's text writer
    assert_same(parsed, ts)


# ---- random datasets -------------------------------------------------------------------------

_RANDOM_ELEMENTS: list[tuple[str, str]] = [
    ("AccessionNumber", "SH"),
    ("StudyDescription", "LO"),
    ("SeriesDescription", "LO"),
    ("ImageComments", "LT"),
    ("Modality", "CS"),
    ("ImageType", "CS"),
    ("StudyDate", "DA"),
    ("StudyTime", "TM"),
    ("AcquisitionDateTime", "DT"),
    ("PatientAge", "AS"),
    ("SliceThickness", "DS"),
    ("ImagePositionPatient", "DS"),
    ("InstanceNumber", "IS"),
    ("Rows", "US"),
    ("FrameOfReferenceUID", "UI"),
    ("ReferringPhysicianName", "PN"),
    ("RetrieveAETitle", "AE"),
    ("ExposureInuAs", "SL"),
    ("ReconstructionDiameter", "DS"),
    ("PixelAspectRatio", "IS"),
]


def _one_value(rng: random.Random, vr: str) -> object:
    text = "".join(rng.choice("ABCDEFGH ^-.0123456789") for _ in range(rng.randint(0, 9)))
    choices: dict[str, object] = {
        "SH": text[:16],
        "LO": text,
        "LT": text,
        "CS": "".join(c for c in text.upper() if c.isalnum() or c == " ")[:16],
        "DA": rng.choice(["20200101", "19991231"]),
        "TM": rng.choice(["101500", "0930", "235959.123456"]),
        "DT": rng.choice(["20200101101500", "2020"]),
        "AS": rng.choice(["063Y", "012M"]),
        "DS": rng.choice(["1.25", "-0.5", "100", "1e3"]),
        "IS": rng.choice(["1", "-42", "300"]),
        "US": rng.randint(0, 65535),
        "SL": rng.randint(-(2**31), 2**31 - 1),
        "UI": generate_uid(),
        "PN": rng.choice(["DOE^JOHN", "A^B^C^D^E", "X"]),
        "AE": rng.choice(["PAIR", "AE1"]),
    }
    return choices[vr]


def _random_value(rng: random.Random, vr: str, single: bool) -> object:
    n = rng.choice([0, 1, 1, 1, 2, 3])
    if n == 0:
        return None if vr in ("US", "SL") else ""
    if n == 1 or single or vr == "PN":
        return _one_value(rng, vr)
    return [_one_value(rng, vr) for _ in range(n)]


def _random_dataset(rng: random.Random, depth: int = 0) -> Dataset:
    ds = Dataset()
    for keyword, vr in rng.sample(_RANDOM_ELEMENTS, rng.randint(1, len(_RANDOM_ELEMENTS))):
        single = keyword in ("Rows", "PatientAge", "StudyDate", "StudyTime", "Modality")
        setattr(ds, keyword, _random_value(rng, vr, single))
    if depth < 2:
        for keyword in rng.sample(["ReferencedImageSequence", "SourceImageSequence"], 1):
            items = [_random_dataset(rng, depth + 1) for _ in range(rng.randint(0, 3))]
            setattr(ds, keyword, items)
            if rng.random() < 0.5:
                ds[keyword].is_undefined_length = True
            for item in items:
                item.is_undefined_length_sequence_item = rng.random() < 0.5
    if depth == 0 and rng.random() < 0.5:
        block = ds.private_block(0x0011, f"RND {rng.randint(0, 9)}", create=True)
        block.add_new(0x01, "LO", "private")
        block.add_new(0x02, "OB", bytes(rng.randint(0, 5)))
    return ds


def test_random_datasets() -> None:
    rng = random.Random(20200415)
    for _ in range(60):
        ds = _random_dataset(rng)
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ts = rng.choice(LITTLE_ENDIAN)
        data = assert_same(ds, ts)
        parsed = parse_bytes(data).dataset
        for tag in rng.sample(sorted(parsed.keys()), rng.randint(0, 4)):
            parsed[tag]  # decode some elements, as de-identification does
        assert_same(parsed, rng.choice(LITTLE_ENDIAN))
        if "ReferencedImageSequence" in parsed and parsed.ReferencedImageSequence:
            parsed.ReferencedImageSequence.append(_random_dataset(rng, 2))
        assert_same(parsed, ts)


@pytest.mark.parametrize("ts", [*LITTLE_ENDIAN, RLELossless, JPEGLSLossless])
def test_dimse_datasets(ts: str, deidentify: Deid) -> None:
    """C-STORE: pynetdicom decodes the P-DATA bytes (no file meta) and ingest encodes that."""
    ds = edge_dataset(size=32)
    if UID(ts).is_compressed:
        ds.compress(ts)
    uid = UID(ts)
    wire = encode(ds, uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated)
    assert wire is not None

    def received() -> Dataset:
        return decode(io.BytesIO(wire), uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated)

    assert_same(received(), ts)
    parsed = validate_dataset(received())
    assert_same(deidentify(parsed.dataset), ts)


# ---- the switch and the logged fallback ------------------------------------------------------


def test_switch_off_never_calls_the_fast_encoder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PAIR_FAST_PATHS=false reaches the encoder through open_node; pydicom then writes."""
    calls: list[Dataset] = []

    def spy(ds: Dataset) -> bytes | None:
        calls.append(ds)
        return fast_part10(ds)

    monkeypatch.setattr(parse, "fast_part10", spy)
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=8)
    expected = _to_part10_bytes_pydicom(copy.deepcopy(ds), ExplicitVRLittleEndian)
    monkeypatch.setenv("PAIR_FAST_PATHS", "false")
    with _fast_paths(True):
        assert get_settings().fast_paths is False
        open_node(tmp_path / "node").close()
        assert fastpaths.enabled() is False
        assert to_part10_bytes(copy.deepcopy(ds), ExplicitVRLittleEndian) == expected
        assert calls == []
        fastpaths.configure(True)
        assert to_part10_bytes(copy.deepcopy(ds), ExplicitVRLittleEndian) == expected
        assert len(calls) == 1


def test_fast_encoder_failure_logs_one_warning_and_pydicom_writes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fast encoder that raises is no longer silently swallowed: one WARNING with the
    path's name and the exception type (no values), and pydicom's bytes."""

    def broken(ds: Dataset) -> bytes | None:
        raise ValueError(str(ds.PatientName))  # a value that must not reach the log

    monkeypatch.setattr(parse, "fast_part10", broken)
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid(), size=8)
    ds.PatientName = "DOE^JANE"
    expected = _to_part10_bytes_pydicom(copy.deepcopy(ds), ExplicitVRLittleEndian)
    with _fast_paths(True), caplog.at_level(logging.WARNING):
        got = to_part10_bytes(copy.deepcopy(ds), ExplicitVRLittleEndian)
    assert got == expected
    warnings_logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.getMessage()) for r in warnings_logged] == [
        ("pair.fastpaths", "fast path part10_encoder failed (ValueError); using the library path")
    ]
    assert "DOE" not in caplog.text
