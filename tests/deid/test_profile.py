"""Profiles parse strictly, with errors that say exactly what is wrong."""

from __future__ import annotations

import pytest

from pair.core.errors import Invalid
from pair.deid.profile import default_profile, parse_profile, profile_for
from pair.deid.table import Act, compile_table, standard_table


def test_default_profile_options() -> None:
    p = default_profile()
    assert p.options.enabled() == [
        "retain_longitudinal_modified_dates",
        "retain_patient_characteristics",
    ]
    assert (p.date_shift.min_days, p.date_shift.max_days) == (-3650, -365)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "options: {retain_patient_characteristic: true}",
            "options.retain_patient_characteristic: unknown key; allowed: "
            "retain_longitudinal_modified_dates, ",
        ),
        ("colour: blue", "colour: unknown key; allowed: name, version, options, date_shift"),
        ("options: {retain_uids: perhaps}", "options.retain_uids: Input should be a valid boolean"),
        ("options:\n  retain_uids: [true\n", "not valid YAML at line 3, column 1"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("date_shift: {min_days: -10, max_days: 10}", "date_shift: the range must not contain 0"),
        (
            "date_shift: {min_days: -10, max_days: -20}",
            "date_shift: min_days (-10) must be <= max_days (-20)",
        ),
        (
            "options: {retain_longitudinal_full_dates: true,"
            " retain_longitudinal_modified_dates: true}",
            "exclude each other",
        ),
        ("options: {clean_pixel_data: true}", "clean_pixel_data is not supported"),
        ("version: 0", "version: Input should be greater than or equal to 1"),
    ],
)
def test_parse_errors_are_precise(text: str, expected: str) -> None:
    with pytest.raises(Invalid) as exc:
        parse_profile(text)
    assert expected in exc.value.message


def test_facility_profile_overrides_default() -> None:
    assert profile_for(None) == default_profile()
    assert profile_for("  ") == default_profile()
    own = profile_for("name: strict\noptions: {retain_safe_private: false}\n")
    assert own.name == "strict" and own.options.enabled() == []


def test_compiled_table_follows_the_standard_and_options() -> None:
    std = standard_table()
    assert std.edition == "2026c"
    assert std.actions[0x00100010] == "Z"  # Patient's Name
    assert std.actions[0x00080018] == "U"  # SOP Instance UID
    basic = compile_table(parse_profile("options: {}"))
    full = compile_table(default_profile())
    assert basic.actions[0x00101010] is Act.REMOVE  # Patient's Age: X ...
    assert full.actions[0x00101010] is Act.KEEP  # ... K with Retain Patient Characteristics
    assert basic.actions[0x00080020] is Act.EMPTY  # Study Date: Z ...
    assert full.actions[0x00080020] is Act.SHIFT  # ... C (shifted) with Modified Dates
    assert full.actions[0x00100030] is Act.EMPTY  # birth date never retained
    assert basic.actions[0x00081010] is Act.EMPTY  # Station Name X/Z/D ...
    assert full.actions[0x00081010] is Act.EMPTY  # ... and in the default (device: opt-in)
    device = compile_table(parse_profile("options: {retain_device_identity: true}"))
    assert device.actions[0x00081010] is Act.KEEP  # ... K with Retain Device Identity
    assert full.actions[0x00081030] is Act.REMOVE  # Study Description: X in the default ...
    descr = compile_table(parse_profile("options: {clean_descriptors: true}"))
    assert descr.actions[0x00081030] is Act.CLEAN  # ... C with Clean Descriptors
    assert 0x5000 in full.curve_groups and 0x60003000 in full.actions
    uids = compile_table(parse_profile("options: {retain_uids: true}"))
    assert uids.actions[0x00080018] is Act.KEEP and not uids.remap_uids
