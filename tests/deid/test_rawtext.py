"""The raw-element fast paths: exactly pydicom's values and bytes, or a refusal."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pair.deid.engine import Deidentifier
from pair.deid.rawtext import raw_text, text_values

# (VR, raw bytes): padding, NULs, several values, empty items, leading spaces
RAW_VALUES = [
    ("CS", b"ORIGINAL\\PRIMARY\\AXIAL "),
    ("CS", b"F "),
    ("CS", b"A\\\\B"),
    ("AS", b"060Y"),
    ("DA", b"20200415"),
    ("DA", b"20200415\\20210101 "),
    ("DA", b"2020"),
    ("DT", b"20200415101500.5+0100 "),
    ("TM", b"101500.123 "),
    ("LO", b"  leading and trailing \x00"),
    ("LO", b"a \\ b\\c "),
    ("SH", b"ACC85028591 "),
    ("UC", b"x\\y"),
    ("LT", b"one\\value, not split \x00"),
    ("ST", b"text "),
    ("UT", b"t"),
    ("UI", b"1.2.840.10008.5.1.4.1.1.2\x00"),
    ("UI", b"1.2.3\\1.2.4\x00"),
    ("AE", b" STORESCU  \\ B "),
    ("PN", b"SMITH^KLAUS "),
    ("PN", b"A^B\\C^D\x00"),
]


def _converted(vr: str, data: bytes) -> list[str]:
    raw = RawDataElement(BaseTag(0x00091001), vr, len(data), data, 0, False, True)
    value = convert_raw_data_element(raw).value
    if isinstance(value, list | pydicom.multival.MultiValue):
        return [str(v) for v in value]
    return [str(value)]


@pytest.mark.parametrize(("vr", "data"), RAW_VALUES)
def test_text_values_are_pydicoms(vr: str, data: bytes) -> None:
    raw = RawDataElement(BaseTag(0x00091001), vr, len(data), data, 0, False, True)
    assert text_values(raw, vr, pn=True) == _converted(vr, data)


def test_text_values_declines_what_it_cannot_know() -> None:
    def raw(vr: str, data: bytes | None, length: int | None = None) -> RawDataElement:
        n = len(data) if length is None and data is not None else (length or 0)
        return RawDataElement(BaseTag(0x00100010), vr, n, data, 0, False, True)

    assert text_values(raw("LO", "Müller".encode("latin-1")), "LO") is None  # charset decides
    assert text_values(raw("LO", b"\x1b$B"), "LO") is None  # ISO 2022 escape
    assert text_values(raw("LO", None, 12), "LO") is None  # deferred read
    assert text_values(raw("PN", b"A^B"), "PN") is None  # names only for the scanner
    assert text_values(raw("DS", b"1.5"), "DS") is None  # numbers are not text
    assert text_values(raw("LO", b""), "LO") == [""]


def _written(elem: DataElement | RawDataElement, enc: tuple[bool, bool]) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = enc
    write_data_element(fp, elem)
    return fp.getvalue()


@pytest.mark.parametrize("enc", [(False, True), (True, True), (False, False)])
@pytest.mark.parametrize(
    ("vr", "value"),
    [
        ("DA", "20190101"),
        ("DA", ["20190101", "20200202"]),
        ("DT", "20190101101500.5+0100"),
        ("UI", "2.25.1234567"),
        ("UI", ["2.25.1", "1.2.840.10008.1.2"]),
        ("PN", "GH-000001"),
        ("LO", "GH-000001"),
        ("LO", ["DICOM PS3.15 2026c Basic Profile", "PAIR pair-default v1"]),
        ("CS", "YES"),
        ("SH", "ANONYMIZED"),
        ("AE", "ANONYMIZED"),
        ("LO", ""),
    ],
)
def test_raw_text_round_trips(vr: str, value: Any, enc: tuple[bool, bool]) -> None:
    tag = BaseTag(0x00081030)
    raw = raw_text(tag, vr, value, enc)
    assert raw is not None
    assert _written(raw, enc) == _written(DataElement(tag, vr, value), enc)
    assert convert_raw_data_element(raw).value == DataElement(tag, vr, value).value


@pytest.mark.parametrize(
    ("vr", "value"),
    [
        ("LO", "trailing "),
        ("LO", " leading"),
        ("LO", "a\\b"),
        ("LO", "Müller"),
        ("LO", ["only one"]),
        ("LO", ["a", ""]),
        ("PN", "A^B=C"),
        ("DS", "1.5"),
        ("LT", "free text"),
    ],
)
def test_raw_text_declines(vr: str, value: Any) -> None:
    assert raw_text(BaseTag(0x00081030), vr, value, (False, True)) is None
    assert raw_text(BaseTag(0x00081030), "LO", "x", None) is None  # unknown encoding


def test_kept_elements_stay_raw_and_the_source_is_untouched(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    ds = load("pydicom_CT_small.dcm")
    before = ds.to_json_dict()
    media = ds.file_meta.MediaStorageSOPInstanceUID
    raw_before = {k for k, v in ds._dict.items() if type(v) is RawDataElement}
    out = make_deid().deidentify(ds).dataset
    assert ds.file_meta.MediaStorageSOPInstanceUID == media  # the source meta is not rewritten
    assert out.file_meta.MediaStorageSOPInstanceUID != media
    # kept elements are the source's raw elements themselves (written byte for byte)
    for keyword in ("Rows", "PixelData", "SOPClassUID", "ImageType", "StudyTime"):
        tag = pydicom.datadict.tag_for_keyword(keyword)
        assert out.get_item(tag) is ds.get_item(tag)
    # rewritten and constant elements are raw too
    for keyword in ("StudyDate", "StudyInstanceUID", "PatientName", "AccessionNumber"):
        assert type(out.get_item(pydicom.datadict.tag_for_keyword(keyword))) is RawDataElement
    assert type(out.get_item(0x00120064)) is RawDataElement  # method code sequence
    # the pass converted no top-level source element except sequences it walked into
    still_raw = {k for k, v in ds._dict.items() if type(v) is RawDataElement}
    converted = raw_before - still_raw
    assert all(ds[k].VR == "SQ" for k in converted)
    assert ds.to_json_dict() == before


def _bulk(elem: DataElement) -> str:
    return f"{len(elem.value or b'')} bytes"


def _json(ds: Dataset) -> dict[str, Any]:
    return ds.to_json_dict(bulk_data_threshold=256, bulk_data_element_handler=_bulk)


@pytest.mark.parametrize("name", ["pydicom_CT_small.dcm", "deid_ctbrain1.dcm"])
@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_output_written_in_any_syntax_reads_back_the_same(
    name: str,
    syntax: str,
    load: Callable[[str], Dataset],
    make_deid: Callable[..., Deidentifier],
) -> None:
    """Raw elements are made in the source's encoding; written in another one they are
    converted and re-encoded, never copied in the wrong encoding."""
    out = make_deid().deidentify(load(name)).dataset
    del out.PixelData  # pydicom itself reads implicit pixel data back as OW
    expected = _json(copy.deepcopy(out))
    out.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    pydicom.dcmwrite(
        buf,
        out,
        implicit_vr=syntax == ImplicitVRLittleEndian,
        little_endian=syntax != ExplicitVRBigEndian,
        force_encoding=True,
    )
    assert _json(pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)) == expected


PLANTS: dict[str, Callable[[Dataset], None]] = {
    "safe private": lambda ds: ds.__setitem__(
        0x00191018, DataElement(0x00191018, "LO", "CompressedSamples")
    ),
    "kept text": lambda ds: setattr(ds, "ManufacturerModelName", "for CompressedSamples"),
    "nested": lambda ds: setattr(
        ds, "ProcedureCodeSequence", Sequence([_item("accession ABCD1234")])
    ),
    "birth date in kept text": lambda ds: setattr(ds, "SoftwareVersions", ["v1", "2004-01-19"]),
}


def _item(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeMeaning = meaning
    return item


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_scanner_finds_the_same_in_raw_and_converted_datasets(
    plant: str, load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    ds = load("pydicom_CT_small.dcm")
    ds.PatientID = "ABCD1234"
    ds.PatientBirthDate = "20040119"
    PLANTS[plant](ds)
    converted = make_deid().deidentify(copy.deepcopy(ds))
    buf = io.BytesIO()
    ds.save_as(buf)
    reread = pydicom.dcmread(io.BytesIO(buf.getvalue()))  # every element raw again
    raw = make_deid().deidentify(reread)
    assert converted.findings, plant
    assert [f.as_dict() for f in raw.findings] == [f.as_dict() for f in converted.findings]
