"""The option-dependent attributes PS3.15 asks for: (0012,0062), (0012,0063), (0012,0064),
(0028,0303), and the option columns on real files."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date, timedelta

import pydicom
import pytest
from pydicom.dataset import Dataset

from pair.deid.engine import Deidentifier
from pair.deid.profile import parse_profile


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _d(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


@pytest.mark.parametrize("keyword", ["BurnedInAnnotation", "RecognizableVisualFeatures"])
def test_identity_not_claimed_removed_when_pixels_identify(
    keyword: str, load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    """PS3.3: Patient Identity Removed YES means removed from the attributes AND the pixels;
    PAIR never cleans pixels, so a header saying they identify the patient gets NO."""
    deid = make_deid()
    ds = load("highdicom_dx_image.dcm")
    setattr(ds, keyword, "YES")
    result = deid.deidentify(ds)
    out = pydicom.dcmread(io.BytesIO(_bytes(result.dataset)))
    assert out.PatientIdentityRemoved == "NO"
    assert out[keyword].value == "YES"  # the flag itself is kept for the reviewer
    assert f"{keyword} is YES" in result.burned_in_risk
    # the header is still de-identified and says how
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert out.PatientName == result.pseudonym
    ds.BurnedInAnnotation = "NO"
    if keyword == "RecognizableVisualFeatures":
        ds.RecognizableVisualFeatures = "NO"
    assert deid.deidentify(ds).dataset.PatientIdentityRemoved == "YES"


def _dates_outside_the_table(ds: Dataset) -> Dataset:
    """Dates and times PS3.15 Table E.1-1 does not list, at the top and in a nested item."""
    ds.DateOfGainCalibration = "20230105"  # (0014,3076) DA
    ds.TimeOfGainCalibration = "101500"  # (0014,3077) TM
    ds.StudyUpdateDateTime = "20230106120000"  # (0008,041F) DT
    item = Dataset()
    item.CodeValue = "T-D3000"
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Chest"
    item.DateOfGainCalibration = "20230107"
    ds.AnatomicRegionSequence = [item]
    return ds


def test_dates_outside_the_table_follow_the_date_option(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    """(0028,0303) must be true of every date: REMOVED empties the unlisted ones too,
    MODIFIED shifts them (at any depth) by the patient's offset, UNMODIFIED keeps them."""
    basic = make_deid(parse_profile("options: {}"))
    out = basic.deidentify(_dates_outside_the_table(load("highdicom_dx_image.dcm"))).dataset
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert out.DateOfGainCalibration == "" and out.TimeOfGainCalibration == ""
    assert out.StudyUpdateDateTime == ""
    assert out.AnatomicRegionSequence[0].DateOfGainCalibration == ""
    assert out.AnatomicRegionSequence[0].CodeValue == "T-D3000"

    result = make_deid().deidentify(_dates_outside_the_table(load("highdicom_dx_image.dcm")))
    out, shift = result.dataset, result.date_shift_days
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert _d(out.DateOfGainCalibration) == date(2023, 1, 5) + timedelta(days=shift)
    assert _d(out.AnatomicRegionSequence[0].DateOfGainCalibration) == date(2023, 1, 7) + timedelta(
        days=shift
    )
    assert out.StudyUpdateDateTime[8:] == "120000"
    assert _d(out.StudyUpdateDateTime) == date(2023, 1, 6) + timedelta(days=shift)
    assert out.TimeOfGainCalibration == "101500"  # times kept, as for the table's TM

    full = make_deid(parse_profile("options: {retain_longitudinal_full_dates: true}"))
    out = full.deidentify(_dates_outside_the_table(load("highdicom_dx_image.dcm"))).dataset
    assert out.DateOfGainCalibration == "20230105"
    assert out.AnatomicRegionSequence[0].DateOfGainCalibration == "20230107"


@pytest.mark.parametrize(
    ("options", "codes", "longitudinal"),
    [
        ("{}", ["113100"], "REMOVED"),
        (
            "{retain_longitudinal_full_dates: true, retain_uids: true,"
            " retain_institution_identity: true}",
            ["113100", "113106", "113110", "113112"],
            "UNMODIFIED",
        ),
        (
            "{retain_longitudinal_modified_dates: true, retain_safe_private: true}",
            ["113100", "113107", "113111"],
            "MODIFIED",
        ),
        (
            "{clean_descriptors: true, retain_patient_characteristics: true,"
            " retain_device_identity: true}",
            ["113100", "113105", "113108", "113109"],
            "REMOVED",
        ),
    ],
)
def test_method_attributes_follow_the_options(
    options: str,
    codes: list[str],
    longitudinal: str,
    load: Callable[[str], Dataset],
    make_deid: Callable[..., Deidentifier],
) -> None:
    """(0012,0063), (0012,0064) and (0028,0303) say exactly which options were applied."""
    deid = make_deid(parse_profile(f"name: opts\noptions: {options}\n"))
    out = pydicom.dcmread(io.BytesIO(_bytes(deid.deidentify(load("pydicom_CT_small.dcm")).dataset)))
    items = out.DeidentificationMethodCodeSequence
    assert [i.CodeValue for i in items] == codes
    assert {i.CodingSchemeDesignator for i in items} == {"DCM"}
    meanings = [i.CodeMeaning for i in items]
    methods = list(out.DeidentificationMethod)
    assert methods[0] == "DICOM PS3.15 2026c Basic Profile"
    assert methods[1 : len(codes)] == meanings[1:]  # one value per option, same meaning
    assert methods[-1] == "PAIR opts v1"
    assert out.LongitudinalTemporalInformationModified == longitudinal
    assert out.PatientIdentityRemoved == "YES"


def test_retain_device_identity_and_patient_characteristics(
    load: Callable[[str], Dataset], make_deid: Callable[..., Deidentifier]
) -> None:
    """K in the option columns keeps the value; without the option the Basic Profile action
    (X/Z/D, Z, X) applies."""
    kept = make_deid(
        parse_profile(
            "options: {retain_device_identity: true, retain_patient_characteristics: true}"
        )
    ).deidentify(load("deid_ctbrain1.dcm"))
    out = kept.dataset
    assert kept.findings == []
    assert (out.StationName, out.DeviceSerialNumber) == ("SGHCT01A", "11223")
    assert (out.PatientSex, out.PatientAge) == ("M", "75Y")
    assert float(out.PatientWeight) == pytest.approx(152.038864155)
    basic = make_deid(parse_profile("options: {}")).deidentify(load("deid_ctbrain1.dcm")).dataset
    assert basic.get("StationName", "") == "" and basic.get("DeviceSerialNumber", "") == ""
    assert basic.get("PatientSex", "") == ""  # Z
    assert "PatientWeight" not in basic and "PatientAge" not in basic  # X
