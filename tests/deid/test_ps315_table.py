"""action-table.yaml's option columns equal PS3.15 Table E.1-1, row by row, column by column.

The standard's table is the vendored machine-readable copy ``deid/data/ps3.15-table-e1-1.csv``
(source and licence in ``ps3.15-table-e1-1.md``). Every difference is reported at once; the
deliberate ones are listed with reasons in ``ps3.15-option-exceptions.yaml``, and an entry there
that no longer differs fails too.
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from pair.deid.profile import DeidOptions
from pair.deid.table import standard_table, table_config

DATA = resources.files("pair.deid") / "data"

# CSV column -> the DeidOptions / action-table.yaml option it is
OPTION_OF_COLUMN = {
    "rtn_safe_priv": "retain_safe_private",
    "rtn_uids": "retain_uids",
    "rtn_dev_id": "retain_device_identity",
    "rtn_inst_id": "retain_institution_identity",
    "rtn_pat_chars": "retain_patient_characteristics",
    "rtn_long_full_dates": "retain_longitudinal_full_dates",
    "rtn_long_modif_dates": "retain_longitudinal_modified_dates",
    "clean_desc": "clean_descriptors",
    "clean_struct_cont": "clean_structured_content",
    "clean_graph": "clean_graphics",
}
_DATE_VRS = {"DA", "DT", "TM"}


@cache
def standard_rows() -> list[dict[str, str]]:
    text = (DATA / "ps3.15-table-e1-1.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines(keepends=True)))


def _tag(text: str) -> int | None:
    """``(gggg,eeee)`` as an int; None for the masked rows ((50XX,XXXX), private attributes)."""
    digits = text.strip("()").replace(",", "")
    try:
        return int(digits, 16)
    except ValueError:
        return None


def _kw(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _tag_of(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


def explicit(option: str) -> set[int]:
    """Attributes the option names one by one (not through the dates or U rules)."""
    spec: dict[str, Any] = table_config()["options"].get(option) or {}
    return {_tag_of(k) for key in ("keep", "clean", "not_retained") for k in spec.get(key) or ()}


def pair_column(option: str) -> dict[int, str]:
    """The option column as action-table.yaml states it (see its comments for the rules)."""
    cfg = table_config()
    spec: dict[str, Any] = cfg["options"].get(option) or {}
    std = standard_table()
    column: dict[int, str] = {}
    never = {_tag_of(k) for k in cfg["dates_never_retained"]}
    if spec.get("dates"):
        for tag in std.actions:
            if _vr(tag) in _DATE_VRS and tag not in never:
                column[tag] = spec["dates"]
    if option == "retain_uids":
        column.update({tag: "K" for tag, code in std.actions.items() if "U" in code})
    for key, code in (("keep", "K"), ("clean", "C"), ("not_retained", "C")):
        for keyword in spec.get(key) or ():
            column[_tag_of(keyword)] = code
    return column


@cache
def exceptions() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DATA / "ps3.15-option-exceptions.yaml").read_text())
    return data


def test_the_vendored_table_is_whole() -> None:
    rows = standard_rows()
    assert len(rows) == 621
    assert set(rows[0]) == {"name", "tag", "retired", "std_comp_iod", "basic_profile"} | set(
        OPTION_OF_COLUMN
    )
    assert all(row["basic_profile"] for row in rows)
    assert len({row["tag"] for row in rows}) == len(rows)


def test_the_basic_profile_column_matches_the_table_pair_loads() -> None:
    """The Basic Profile column PAIR takes from dicom-anonymizer agrees on every vendored row."""
    std = standard_table()
    masked = {(g, e): code for g, e, _gm, _em, code in std.masked}
    diffs = []
    for row in standard_rows():
        tag = _tag(row["tag"])
        if tag is None:
            digits = row["tag"].strip("()").replace(",", "").upper()
            if digits.startswith(("50XX", "60XX")):
                key = (int(digits[:2] + "00", 16), int(digits[4:].replace("X", "0"), 16))
                got = masked.get(key)
                if got != row["basic_profile"]:
                    diffs.append(f"{row['tag']} {row['name']}: PAIR {got} standard X")
            continue
        got = std.actions.get(tag)
        if got != row["basic_profile"]:
            diffs.append(f"{row['tag']} {_kw(tag)}: PAIR {got} standard {row['basic_profile']}")
    assert diffs == [], "Basic Profile differences:\n" + "\n".join(diffs)


def test_every_option_column_matches_the_standard() -> None:
    """All rows, all option columns; all differences reported together."""
    allowed = {
        (e["column"], _tag_of(e["keyword"])): (e["pair"], e["standard"])
        for e in exceptions()["differences"]
    }
    not_offered = exceptions()["options_not_offered"]
    rows = {tag: row for row in standard_rows() if (tag := _tag(row["tag"])) is not None}
    # rows PAIR's Basic Profile table (a later edition) has and the vendored copy has not: the
    # dates and U rules cover them, the vendored edition cannot judge them
    newer = set(standard_table().actions) - set(rows)
    diffs: list[str] = []
    seen: set[tuple[str, int]] = set()
    for column, option in OPTION_OF_COLUMN.items():
        if column in not_offered or column == "rtn_safe_priv":
            continue
        ours = pair_column(option)
        for tag in sorted(set(ours) | {t for t, r in rows.items() if r[column]}):
            if tag not in rows:
                if tag in newer and tag not in explicit(option):
                    continue
                diffs.append(f"{column} {_kw(tag)}: PAIR {ours[tag]}, not in the standard's table")
                continue
            pair, standard = ours.get(tag, ""), rows[tag][column]
            if pair == standard:
                continue
            if allowed.get((column, tag)) == (pair, standard):
                seen.add((column, tag))
                continue
            diffs.append(
                f"{column} {_kw(tag)} {rows[tag]['tag']}: PAIR {pair!r} standard {standard!r}"
            )
    stale = [f"{c} {_kw(t)}" for c, t in sorted(set(allowed) - seen)]
    assert diffs == [], f"{len(diffs)} option-column differences:\n" + "\n".join(diffs)
    assert stale == [], f"exceptions that no longer differ: {stale}"


def test_every_exception_has_a_reason() -> None:
    reasons = exceptions()["reasons"]
    for entry in exceptions()["differences"]:
        assert entry["column"] in OPTION_OF_COLUMN
        assert len(reasons.get(entry["column"], "")) > 40, entry
    assert set(reasons) <= set(OPTION_OF_COLUMN)


@pytest.mark.parametrize("column", ["clean_struct_cont", "clean_graph"])
def test_options_not_offered_are_refused(column: str) -> None:
    """A column PAIR does not implement: the option is rejected, so the Basic Profile applies."""
    option = OPTION_OF_COLUMN[column]
    assert column in exceptions()["options_not_offered"]
    assert option not in table_config()["options"]
    with pytest.raises(ValidationError, match=f"{option} is not supported"):
        DeidOptions(**{option: True})
    assert any(row[column] for row in standard_rows())


def test_retain_safe_private_is_the_private_attributes_row() -> None:
    """The column's only entry is the odd-group row; PAIR's safe list is safe-private.yaml."""
    entries = [
        (row["tag"], row["rtn_safe_priv"]) for row in standard_rows() if row["rtn_safe_priv"]
    ]
    assert entries == [("(GGGG,EEEE) WHERE GGGG IS ODD", "C")]
    assert "retain_safe_private" in table_config()["options"]
    assert yaml.safe_load((DATA / "safe-private.yaml").read_text())
