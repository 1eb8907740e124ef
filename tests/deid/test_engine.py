"""The engine on real files: nothing identifying survives, UIDs and dates stay consistent."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date, timedelta

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr._concepts_dict import concepts

from pair.deid.engine import Deidentifier
from pair.deid.profile import parse_profile
from pair.deid.scanner import scan_residual_phi
from pair.deid.store import InMemoryMappingStore

FILES = [
    "deid_ctbrain1.dcm",
    "pydicom_CT_small.dcm",
    "highdicom_sr_document.dcm",
    "highdicom_dx_image.dcm",
]
# Identifying values of the test files (compared case-insensitively against the output bytes).
PHI = {
    "deid_ctbrain1.dcm": [
        "SIMPSON",
        "HOMER",
        "00007041776",
        "999887722",
        "HIBBARD",
        "JULIUS",
        "RIVERIA",
        "SPRINGFIELD",
        "Evergreen",
        "M1212121",
        "20200704",
        "Seizure",
        "SyngoWorkflow",
        "CCHS",
        "SGHARCHIVE",
        "20230101",
    ],
    "pydicom_CT_small.dcm": [
        "CompressedSamples",
        "1CT1",
        "ABCD1234",
        "1234ABCD",
        "JFK",
        "20040119",
    ],
    "highdicom_sr_document.dcm": ["CompressedSamples", "1CT1", "JFK", "Foo", "20040119"],
    "highdicom_dx_image.dcm": [
        "AVeryGood",
        "123456",
        "16387a",
        "20140422",
        "Mitral",
        "Veterinarian",
        "20200125",
    ],
}


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("name", FILES)
def test_no_original_phi_survives(
    name: str, load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    original = load(name)
    result = make_deid().deidentify(original)
    assert result.findings == []
    assert scan_residual_phi(load(name), result.dataset) == []
    data = _bytes(result.dataset).lower()
    for value in PHI[name]:
        assert value.lower().encode() not in data, f"{value} survived in {name}"
    reread = pydicom.dcmread(io.BytesIO(_bytes(result.dataset)))
    assert reread.PatientName == result.pseudonym == reread.PatientID
    assert result.pseudonym.startswith("GH-")


def test_original_dataset_is_not_modified(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    ds = load("deid_ctbrain1.dcm")
    before = _bytes(ds)
    make_deid().deidentify(ds)
    assert _bytes(ds) == before


def test_private_elements_only_safe_ones_kept(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    out = make_deid().deidentify(load("deid_ctbrain1.dcm")).dataset
    private = sorted(int(e.tag) for e in out.iterall() if e.tag.is_private)
    assert private == [0x00190010, 0x00191090, 0x00191092, 0x00191093, 0x00191096]
    assert out[0x00190010].value == "SIEMENS CT VA0  COAD"
    no_private = make_deid(parse_profile("options: {retain_safe_private: false}"))
    out2 = no_private.deidentify(load("deid_ctbrain1.dcm")).dataset
    assert not [e for e in out2.iterall() if e.tag.is_private]


def test_planted_name_in_safe_private_element_is_found(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    ds = load("pydicom_CT_small.dcm")
    ds[0x00191018].value = "CompressedSamples"  # GEMS_ACQU_01 'First scan ras': kept as safe
    result = make_deid().deidentify(ds)
    assert [(f.path, f.kind, f.source) for f in result.findings] == [
        ("(0019,1018)", "name", "PatientName")
    ]
    assert result.quarantined
    assert "CompressedSamples".lower() not in result.findings[0].message.lower()


def test_planted_name_in_nested_sequence_is_found(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    ds = load("deid_ctbrain1.dcm")
    ds.CTDIPhantomTypeCodeSequence[0].CodeMeaning = "phantom of homer"
    result = make_deid().deidentify(ds)
    paths = {(f.path, f.source) for f in result.findings}
    assert ("(0018,9346)[0](0008,0104)", "PatientName") in paths
    assert all("homer" not in f.message.lower() for f in result.findings)


def _refs(ds: Dataset) -> set[str]:
    return {str(e.value) for e in ds.iterall() if e.keyword == "ReferencedSOPInstanceUID"}


def test_uids_consistent_across_files_and_references(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    deid = make_deid()
    ct = deid.deidentify(load("pydicom_CT_small.dcm")).dataset
    sr = deid.deidentify(load("highdicom_sr_document.dcm")).dataset
    assert ct.StudyInstanceUID == sr.StudyInstanceUID  # same study in the originals
    assert str(ct.SOPInstanceUID) in _refs(sr)  # SR references the CT image, in 2 sequences
    evidence = sr.PertinentOtherEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == ct.SeriesInstanceUID
    assert ct.file_meta.MediaStorageSOPInstanceUID == ct.SOPInstanceUID
    for uid in (
        ct.StudyInstanceUID,
        ct.SeriesInstanceUID,
        ct.SOPInstanceUID,
        ct.FrameOfReferenceUID,
        sr.SOPInstanceUID,
    ):
        assert uid.startswith("2.25.") and len(uid) <= 64 and uid.is_valid
    # well-known UIDs untouched
    assert ct.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ct.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    ref_class = sr.PertinentOtherEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert ref_class.ReferencedSOPSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    # UID content items inside the SR content tree are remapped too
    uids = [str(e.value) for e in sr.iterall() if e.keyword == "UID"]
    assert uids and all(u.startswith("2.25.") for u in uids)


def test_uids_stable_across_runs_and_keyed_by_secret(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    first = make_deid().deidentify(load("deid_ctbrain1.dcm")).dataset
    again = make_deid().deidentify(load("deid_ctbrain1.dcm")).dataset
    other = make_deid(secret=b"another-secret").deidentify(load("deid_ctbrain1.dcm")).dataset
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert first[kw].value == again[kw].value
        assert first[kw].value != other[kw].value
    assert _refs(first) == _refs(again) != _refs(other)
    # the image reference and the irradiation event share an original UID: still equal
    assert first.SourceImageSequence[0].ReferencedSOPInstanceUID == first.IrradiationEventUID


def _d(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def test_date_shift_per_patient_keeps_intervals(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    deid = make_deid()
    ds = load("deid_ctbrain1.dcm")
    result = deid.deidentify(ds)
    out = result.dataset
    shift = result.date_shift_days
    assert -3650 <= shift <= -365
    assert _d(out.StudyDate) == date(2023, 1, 1) + timedelta(days=shift)
    assert _d(out.DateOfLastCalibration) == date(2020, 1, 1) + timedelta(days=shift)
    assert _d(out.StudyDate) - _d(out.DateOfLastCalibration) == date(2023, 1, 1) - date(2020, 1, 1)
    assert out.AcquisitionDateTime.endswith("011721.621000")
    assert out.StudyTime == ds.StudyTime  # times kept
    assert out.PatientAge == "75Y"  # Retain Patient Characteristics
    assert out.get("PatientBirthDate", "") == ""
    # a second study of the same patient: same pseudonym, same shift
    later = load("deid_ctbrain1.dcm")
    later.StudyInstanceUID = "1.2.3.4.5"
    later.StudyDate = "20240301"
    second = deid.deidentify(later)
    assert (second.pseudonym, second.date_shift_days) == (result.pseudonym, shift)
    assert _d(second.dataset.StudyDate) - _d(out.StudyDate) == date(2024, 3, 1) - date(2023, 1, 1)
    other = deid.deidentify(load("highdicom_dx_image.dcm"))
    assert other.pseudonym != result.pseudonym


def test_deidentification_attributes(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    out = make_deid().deidentify(load("highdicom_dx_image.dcm")).dataset
    assert out.PatientIdentityRemoved == "YES"
    methods = list(out.DeidentificationMethod)
    assert methods[0] == "DICOM PS3.15 2026c Basic Profile"
    assert any("dicom_anonymizer 2.1.0" in m for m in methods)
    assert all(len(m) <= 64 for m in methods)
    codes = [
        (i.CodeValue, i.CodingSchemeDesignator) for i in out.DeidentificationMethodCodeSequence
    ]
    assert codes == [
        (c, "DCM") for c in ("113100", "113105", "113107", "113108", "113109", "113111")
    ]
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_method_codes_are_cid_7050() -> None:
    """Every code PAIR can write is in PS3.16 CID 7050 with the same meaning (pydicom's copy)."""
    from pair.deid.table import table_config

    cfg = table_config()
    dcm: dict[str, dict[str, tuple[str, list[int]]]] = concepts["DCM"]  # type: ignore[assignment]
    known = {code: value for entry in dcm.values() for code, value in entry.items()}
    written = [cfg["basic_profile_code"]] + [o["code"] for o in cfg["options"].values()]
    assert len(written) == 9
    for code in written:
        meaning, cids = known[code["value"]]
        assert meaning == code["meaning"] and 7050 in cids


def test_basic_profile_only(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    deid = make_deid(parse_profile("name: basic\noptions: {}\n"))
    result = deid.deidentify(load("deid_ctbrain1.dcm"))
    out = result.dataset
    assert result.findings == []
    assert "PatientAge" not in out
    assert out.get("StationName", "") == ""
    assert out.get("StudyDate", "") in ("", "19000101")
    assert "StudyDescription" not in out
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert not [e for e in out.iterall() if e.tag.is_private]
    assert result.date_shift_days == 0


def test_clean_descriptors_removes_identifying_fragments(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    ds = load("deid_ctbrain1.dcm")
    ds.SeriesDescription = "BRAIN for Simpson 2023-01-01"
    out = make_deid().deidentify(ds).dataset
    assert out.StudyDescription == "CT BRAIN WO IVCON"
    assert "SIMPSON" not in out.SeriesDescription.upper()
    assert "2023" not in out.SeriesDescription


def test_cleaning_masks_only_indexed_words_and_says_why(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    """A description word is masked only when it is one of the original's identifying values,
    and the review line names the kind and source element (never the value)."""
    ds = load("deid_ctbrain1.dcm")
    ds.StudyDescription = "CT jpegls"
    result = make_deid().deidentify(ds)
    assert result.dataset.StudyDescription == "CT jpegls"  # not in the index: kept as written
    assert not any(line.startswith("StudyDescription") for line in result.cleaned)

    ds.PatientName = "Jpegls^Maria"
    result = make_deid().deidentify(ds)
    assert result.dataset.StudyDescription == "CT ***"
    assert "StudyDescription 1 word masked: name of PatientName" in result.cleaned
    assert "StudyDescription 1 word masked: name of PatientName" in result.review_reasons
    assert not any("JPEGLS" in line.upper() or "MARIA" in line.upper() for line in result.cleaned)

    ds.SeriesDescription = "BRAIN 2023-01-01"
    ds.AcquisitionDate = "20230101"
    lines = make_deid().deidentify(ds).cleaned
    assert any(line.startswith("SeriesDescription emptied: date of") for line in lines), lines


def test_sr_content_tree_kept_with_text_replaced(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    out = make_deid().deidentify(load("highdicom_sr_document.dcm")).dataset
    texts = [e.value for e in out.iterall() if e.keyword == "TextValue"]
    assert texts and set(texts) == {"ANONYMIZED"}
    assert len(out.ContentSequence) == 8


def test_burned_in_risk(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    deid = make_deid()
    assert deid.deidentify(load("deid_ctbrain1.dcm")).burned_in_risk == [
        "secondary capture SOP class"
    ]
    assert deid.deidentify(load("highdicom_dx_image.dcm")).burned_in_risk == []
    ds = load("highdicom_dx_image.dcm")
    ds.BurnedInAnnotation = "YES"
    ds.Modality = "US"
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.SeriesDescription = "Dose Report"
    reasons = deid.deidentify(ds).burned_in_risk
    assert reasons == [
        "BurnedInAnnotation is YES",
        "modality US often carries burned-in text",
        "ImageType contains SECONDARY",
        "ImageType contains SCREEN SAVE",
        "SeriesDescription suggests a dose screen or protocol page",
    ]


def test_pixel_data_untouched(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    ds = load("pydicom_CT_small.dcm")
    out = make_deid().deidentify(ds).dataset
    assert out.PixelData == ds.PixelData
    assert (out.pixel_array == ds.pixel_array).all()


def test_store_gets_study_mapping(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    store = InMemoryMappingStore()
    result = make_deid(store=store).deidentify(load("deid_ctbrain1.dcm"))
    assert store.studies[str(result.dataset.StudyInstanceUID)] == (
        "1.2.840.113696.376376.500.43158802.99999999999999",
        "999887722",
        result.pseudonym,
    )
    assert result.original_accession == "999887722"


def test_other_options(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    full = make_deid(parse_profile("options: {retain_longitudinal_full_dates: true}"))
    r = full.deidentify(load("deid_ctbrain1.dcm"))
    assert r.dataset.StudyDate == "20230101" and r.date_shift_days == 0
    assert r.dataset.LongitudinalTemporalInformationModified == "UNMODIFIED"
    uids = make_deid(parse_profile("options: {retain_uids: true}"))
    ds = load("pydicom_CT_small.dcm")
    assert uids.deidentify(ds).dataset.SOPInstanceUID == ds.SOPInstanceUID
    inst = make_deid(parse_profile("options: {retain_institution_identity: true}"))
    r = inst.deidentify(load("deid_ctbrain1.dcm"))
    assert r.dataset.InstitutionName == "SGH SPRINGFIELD GENERAL HOSPITAL"
    assert r.findings == []  # institution identity is retained on purpose, not a finding
    desc = make_deid(parse_profile("options: {clean_descriptors: true}")).deidentify(
        load("highdicom_dx_image.dcm")
    )
    assert desc.dataset.SeriesDescription == "CHEST"
    assert "ImageComments" not in desc.dataset  # comments stay removed (stricter than C)
    assert "AdditionalPatientHistory" not in desc.dataset


def test_implicit_vr_input(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    ds = load("pydicom_CT_small.dcm")
    buf = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    implicit = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    result = make_deid().deidentify(implicit)
    assert result.findings == []
    reread = pydicom.dcmread(io.BytesIO(_bytes(result.dataset)))
    assert reread.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert reread[0x00191023].value is not None  # safe private element kept
    assert reread[0x00190010].value == "GEMS_ACQU_01"
    assert (reread.pixel_array == ds.pixel_array).all()


def test_date_shift_edge_cases() -> None:
    from pair.deid.walk import _shift_da, _shift_dt

    assert _shift_da("20240301", -1) == "20240229"  # leap day
    assert _shift_da("20230101-20230131", -365) == "20220101-20220131"  # range
    assert _shift_da("-20230131", -1) == "-20230130"  # open range
    assert _shift_da("2023.01.01", -1) == "20221231"  # ACR-NEMA form
    assert _shift_da("2023", -1) is None  # not a full date: removed, never kept
    assert _shift_da("20231345", -1) is None
    assert _shift_dt("20230101123000.5+0100", -2) == "20221230123000.5+0100"
    assert _shift_dt("2023", -2) is None


def test_invalid_dates_are_emptied_not_kept(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    ds = load("highdicom_dx_image.dcm")
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        ds.SeriesDate = "2020"
    out = make_deid().deidentify(ds).dataset
    assert out.SeriesDate == ""


def test_birth_date_inside_a_datetime_is_found(load: Callable[[str], Dataset]) -> None:
    original = load("deid_ctbrain1.dcm")
    out = Dataset()
    out.AcquisitionDateTime = "20200704101010"
    assert [(f.path, f.kind) for f in scan_residual_phi(original, out)] == [("(0008,002A)", "date")]
