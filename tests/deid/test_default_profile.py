"""The site default (issue 11): Basic Profile + modified dates + patient characteristics only;
device identity is an explicit opt-in; the node's own pseudonym never counts as residual PHI."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pair.deid.engine import Deidentifier
from pair.deid.profile import default_profile, parse_profile, profile_warnings
from pair.deid.store import InMemoryMappingStore
from tests.deid.conftest import SECRET
from tests.factories import ct_instance


def _ct() -> Dataset:
    ds = ct_instance(study_uid=generate_uid(), series_uid=generate_uid())
    ds.StationName = "SGHCT01A"
    ds.DeviceSerialNumber = "11223"
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00191023, "DS", "0.5")  # a safe private element (Table Speed)
    return ds


def test_default_drops_station_name_keeps_shifted_dates_and_characteristics() -> None:
    profile = default_profile()
    assert profile_warnings(profile) == []
    out = Deidentifier(profile, SECRET, InMemoryMappingStore(), "GH").deidentify(_ct()).dataset
    assert out.get("StationName", "") == "" and out.get("DeviceSerialNumber", "") == ""
    assert out.StudyDate and out.StudyDate != "20200415"  # kept, shifted
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert (out.PatientSex, out.PatientAge) == ("M", "063Y")
    assert 0x00191023 not in out and out.get("StudyDescription", "") == ""  # no other option
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert {"113100", "113107", "113108"} <= codes and "113109" not in codes


def test_device_identity_is_an_opt_in_with_a_warning() -> None:
    profile = parse_profile(
        "options: {retain_longitudinal_modified_dates: true,"
        " retain_patient_characteristics: true, retain_device_identity: true}"
    )
    warnings = profile_warnings(profile)
    assert len(warnings) == 1 and "Retain Device Identity" in warnings[0]
    out = Deidentifier(profile, SECRET, InMemoryMappingStore(), "GH").deidentify(_ct()).dataset
    assert out.StationName == "SGHCT01A"


def test_surname_equal_to_the_facility_code_is_not_quarantined() -> None:
    ds = ct_instance(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient={"PatientName": "HOSPA^MIRIAM", "PatientID": "MRN7700111"},
    )
    deid = Deidentifier(default_profile(), SECRET, InMemoryMappingStore(), "HOSPA")
    result = deid.deidentify(ds)
    assert result.pseudonym.startswith("HOSPA-")
    assert result.findings == []
    # the same surname anywhere PAIR did not write it is still found
    ds.BodyPartExamined = "HOSPA"
    leaky = deid.deidentify(ds)
    assert [(f.path, f.source) for f in leaky.findings] == [("(0018,0015)", "PatientName")]


def test_constants_pair_writes_are_not_findings() -> None:
    """A surname that happens to be a value PAIR writes itself (Longitudinal Temporal
    Information Modified) is not found there."""
    ds = ct_instance(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient={"PatientName": "MODIFIED^ANNA", "PatientID": "MRN7700112"},
    )
    result = Deidentifier(default_profile(), SECRET, InMemoryMappingStore(), "GH").deidentify(ds)
    assert result.dataset.LongitudinalTemporalInformationModified == "MODIFIED"
    assert result.findings == []
