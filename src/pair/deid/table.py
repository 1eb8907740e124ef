"""The PS3.15 Table E.1-1 action table, compiled once per profile into ``tag -> action``.

The Basic Profile column comes from dicom-anonymizer's table generated from the standard
(``dicomfields_2026c``); ``data/action-table.yaml`` adds the option columns, the resolution of
compound actions and the UID attributes that are never remapped.
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass
from functools import cache
from importlib import metadata, resources
from typing import Any

import yaml
from pydicom.datadict import dictionary_VR, tag_for_keyword

from pair.deid.profile import DeidProfile


class Act(enum.IntEnum):
    """Concrete action applied to one element."""

    KEEP = 0  # kept as is (explicit K: even a UID is not remapped)
    REMOVE = 1  # X
    EMPTY = 2  # Z (zero length; an empty sequence for SQ)
    DUMMY = 3  # D (a dummy value of the right VR)
    UID = 4  # U (keyed remap)
    SHIFT = 5  # date/datetime shifted by the patient's offset
    CLEAN = 6  # C on text: identifying fragments removed
    WALK = 7  # sequence kept, items de-identified recursively
    DEFAULT = 8  # not in the table: kept, but UIDs remapped and dates shifted when enabled


_BASIC_CATEGORIES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
_DATE_VRS = frozenset({"DA", "DT", "TM"})


@dataclass(frozen=True)
class StandardTable:
    """The Basic Profile column as published: tag -> action code, plus masked repeating groups."""

    edition: str
    source: str
    actions: dict[int, str]
    masked: tuple[tuple[int, int, int, int, str], ...]  # group, element, gmask, emask, code


@cache
def table_config() -> dict[str, Any]:
    text = (resources.files("pair.deid") / "data" / "action-table.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


@cache
def standard_table() -> StandardTable:
    cfg = table_config()["basic_table"]
    module = importlib.import_module(cfg["module"])
    version = metadata.version(cfg["package"])
    actions: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, code in _BASIC_CATEGORIES.items():
        for entry in getattr(module, category):
            if len(entry) == 4:
                masked.append((entry[0], entry[1], entry[2], entry[3], code))
            else:
                actions[(entry[0] << 16) | entry[1]] = code
    return StandardTable(
        edition=str(cfg["edition"]),
        source=f"{cfg['package']} {version} ({cfg['module'].rsplit('.', 1)[-1]})",
        actions=actions,
        masked=tuple(masked),
    )


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"unknown DICOM keyword {keyword!r} in action-table.yaml")
    return int(tag)


def _resolve(code: str, vr: str, walk: bool) -> Act:
    """Turn a table code (maybe compound) into one concrete action for an attribute's VR."""
    if "U*" in code:
        return Act.WALK if vr == "SQ" else Act.UID
    if vr == "SQ":
        if code == "K" or code == "C" or walk:
            return Act.WALK
        return Act.REMOVE if code.startswith("X") and "Z" not in code else Act.EMPTY
    if code in ("Z/D",):
        return Act.DUMMY if vr in _DATE_VRS else Act.EMPTY
    simple = {
        "D": Act.DUMMY,
        "Z": Act.EMPTY,
        "X": Act.REMOVE,
        "U": Act.UID,
        "K": Act.KEEP,
        "C": Act.CLEAN,
        "X/Z": Act.EMPTY,
        "X/D": Act.REMOVE,
        "X/Z/D": Act.EMPTY,
    }
    return simple[code]


@dataclass(frozen=True)
class CompiledTable:
    """Everything the engine needs per element, computed once per profile."""

    actions: dict[int, Act]
    curve_groups: frozenset[int]  # groups 50xx: every element removed
    never_remap: frozenset[int]
    shift_dates: bool  # DA/DT values shifted (modified dates option)
    # no date option: dates and times outside the table are emptied too, so that
    # (0028,0303) REMOVED holds for every DA/DT/TM of the output
    remove_dates: bool
    remap_uids: bool
    edition: str
    source: str
    codes: tuple[tuple[str, str], ...]  # CID 7050 (value, meaning), Basic Profile first
    option_labels: tuple[str, ...]


@cache
def compile_table(profile: DeidProfile) -> CompiledTable:
    std = standard_table()
    cfg = table_config()
    opts = profile.options
    walk = {_tag(k) for k in cfg["walk_sequences"]}
    never_dates = {_tag(k) for k in cfg["dates_never_retained"]}

    actions: dict[int, Act] = {}
    for tag, code in std.actions.items():
        vr = _vr(tag)
        actions[tag] = _resolve(code, vr, tag in walk)
    for keyword, code in (cfg.get("additions") or {}).items():
        tag = _tag(keyword)
        actions.setdefault(tag, _resolve(code, _vr(tag), tag in walk))

    curve_groups: set[int] = set()
    for group, element, gmask, emask, code in std.masked:
        act = _resolve(code, "", False)
        groups = [g for g in range(0x0000, 0x10000) if g & gmask == group & gmask and g % 2 == 0]
        if emask == 0:
            curve_groups.update(groups)
            continue
        for g in groups:
            actions[(g << 16) | element] = act

    codes: list[tuple[str, str]] = [
        (cfg["basic_profile_code"]["value"], cfg["basic_profile_code"]["meaning"])
    ]
    labels: list[str] = []
    for name, option in cfg["options"].items():
        if not getattr(opts, name):
            continue
        codes.append((option["code"]["value"], option["code"]["meaning"]))
        labels.append(option["code"]["meaning"])
        date_rule = option.get("dates")
        if date_rule:
            for tag in std.actions:
                vr = _vr(tag)
                if vr in _DATE_VRS and tag not in never_dates:
                    keep_time = date_rule == "K" or vr == "TM"
                    actions[tag] = Act.KEEP if keep_time else Act.SHIFT
        for keyword in option.get("keep") or ():
            tag = _tag(keyword)
            actions[tag] = _resolve("K", _vr(tag), tag in walk)
        for keyword in option.get("clean") or ():
            tag = _tag(keyword)
            actions[tag] = _resolve("C", _vr(tag), tag in walk)
        for keyword in option.get("not_retained") or ():
            _tag(keyword)  # validated; the Basic Profile action stays

    if opts.retain_uids:
        for tag, act in list(actions.items()):
            if act is Act.UID:
                actions[tag] = Act.KEEP

    return CompiledTable(
        actions=actions,
        curve_groups=frozenset(curve_groups),
        never_remap=frozenset(_tag(k) for k in cfg["never_remap_uids"]),
        shift_dates=opts.retain_longitudinal_modified_dates,
        remove_dates=not (
            opts.retain_longitudinal_modified_dates or opts.retain_longitudinal_full_dates
        ),
        remap_uids=not opts.retain_uids,
        edition=std.edition,
        source=std.source,
        codes=tuple(codes),
        option_labels=tuple(labels),
    )
