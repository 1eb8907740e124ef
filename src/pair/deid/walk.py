"""One de-identification pass over a dataset: the element walk the engine runs per instance.

Elements the table keeps are copied as the source's own (raw) element objects; elements it
rewrites are made as raw elements too where ``rawtext`` can guarantee the exact value and
bytes pydicom would produce, so neither the source nor the output is converted needlessly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import Any, Protocol

from pydicom import config
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from pair.deid.profile import DeidProfile
from pair.deid.rawtext import raw_text, resolved_vr, text_values
from pair.deid.scanner import PhiIndex, collect_phi
from pair.deid.table import Act, CompiledTable

# how a review line names what a cleaned word matched (scanner kinds)
_KIND_WORDS = {
    "name": "name",
    "identifier": "identifier",
    "date": "birth date",
    "other-date": "date",
    "address": "address",
    "institution": "institution",
    "free-text": "free text",
}


@dataclass(frozen=True)
class SafePrivate:
    vr: str
    action: str  # keep | date


class Engine(Protocol):
    """What a pass reads from its ``Deidentifier`` (the engine imports this module, not back)."""

    profile: DeidProfile
    table: CompiledTable
    _safe: dict[tuple[str, int, int], SafePrivate]
    _dispatch: dict[int, Act]

    def remap_uid(self, uid: str) -> str: ...


_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN", "CS", "AE"})
_STRING_VRS = _TEXT_VRS | {"DA", "DT", "TM", "UI", "UR", "AS", "DS", "IS"}
# VRs whose empty value is "" both when written by PAIR and when pydicom reads it back
_EMPTY_STR_VRS = _STRING_VRS - {"DS", "IS"}
_DUMMY: dict[str, Any] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UR": "",
    "FD": 0.0,
    "FL": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
}


@cache
def _dict_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _put(out: Dataset, key: Any, raw: Any) -> None:
    """Copy an element unchanged. Bypasses ``Dataset.__setitem__``, which converts every raw
    private element to look up its creator: the copy is byte-identical, and this is the
    hottest line of ingest (``key`` is the source's BaseTag, ``raw`` not a sequence)."""
    out._dict[key] = raw


def _none_as_empty() -> bool:
    return bool(config.use_none_as_empty_text_VR_value)


def _shift_da(value: str, days: int) -> str | None:
    v = value.strip()
    if "-" in v:  # a range
        parts = [_shift_da(p, days) if p else "" for p in v.split("-", 1)]
        return None if None in parts else "-".join(p or "" for p in parts)
    if len(v) == 10 and v[4] == "." and v[7] == ".":  # ACR-NEMA YYYY.MM.DD
        v = v.replace(".", "")
    if len(v) != 8 or not v.isdigit():
        return None
    try:
        d = date(int(v[:4]), int(v[4:6]), int(v[6:])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def _shift_dt(value: str, days: int) -> str | None:
    v = value.strip()
    if len(v) < 8:
        return None
    head = _shift_da(v[:8], days)
    return None if head is None else head + v[8:]


class Pass:
    """State of one ``deidentify`` call."""

    def __init__(self, engine: Engine, shift: int, original: Dataset) -> None:
        self.e = engine
        self.t = engine.table
        self.shift = shift
        self.original = original
        self._index: PhiIndex | None = None
        self.cleaned: list[str] = []  # why descriptors were cleaned, for the review

    def index(self) -> PhiIndex:
        """Identifying values of the original (all dates included, for cleaning)."""
        if self._index is None:
            self._index = collect_phi(self.original, all_dates=True)
        return self._index

    def walk(self, src: Dataset) -> Dataset:
        out = Dataset()
        enc = getattr(src, "original_encoding", (None, None))
        raw_enc: tuple[bool, bool] | None = None
        if enc[0] is not None and enc[1] is not None:
            out.set_original_encoding(enc[0], enc[1], src.original_character_set)
            raw_enc = (bool(enc[0]), bool(enc[1]))
        dispatch = self.e._dispatch
        curve = self.t.curve_groups
        safe = self.e._safe
        shift_dates, remap_uids = self.t.shift_dates, self.t.remap_uids
        remove_dates = self.t.remove_dates
        never_remap = self.t.never_remap
        creators: dict[tuple[int, int], str] = {}
        sd, od = src._dict, out._dict
        for tag in sorted(sd, key=int):
            t = int(tag)
            group = t >> 16
            if group & 1:
                if safe:
                    self._private(src, out, tag, creators, raw_enc)
                continue
            act = dispatch.get(t)
            if act is None:
                if (t & 0xFFFF) == 0 or group == 0x0002 or group in curve:
                    continue
                act = Act.DEFAULT
            elif act is Act.REMOVE:
                continue
            raw = sd[tag]
            if type(raw) is RawDataElement and raw.value is None:
                raw = src[tag]  # a deferred read, as Dataset.get_item does
            vr = str(raw.VR) if raw.VR else _dict_vr(t)
            if act is Act.DEFAULT:
                if vr == "SQ":
                    act = Act.WALK
                elif vr == "UI":
                    if t in never_remap or not remap_uids:
                        od[tag] = raw
                        continue
                    act = Act.UID
                elif shift_dates and (vr == "DA" or vr == "DT"):
                    act = Act.SHIFT
                elif remove_dates and (vr == "DA" or vr == "DT" or vr == "TM"):
                    act = Act.EMPTY
                else:
                    od[tag] = raw
                    continue
            elif act is Act.KEEP and vr != "SQ":
                od[tag] = raw
                continue
            self._apply(src, out, tag, vr, act, raw, raw_enc)
        return out

    def _value(self, src: Dataset, key: Any, vr: str, raw: Any) -> Any:
        """``src[key].value`` for a text element; from the raw bytes (a list for several
        values) when that is exact, so the source is not converted."""
        if type(raw) is RawDataElement:
            rvr = resolved_vr(raw, int(key), _dict_vr)
            if rvr is not None:
                values = text_values(raw, rvr)
                if values is not None:
                    return values[0] if len(values) == 1 else values
        return src[key].value

    def _emit(self, out: Dataset, key: Any, vr: str, value: Any, enc: Any) -> None:
        elem = raw_text(key, vr, value, enc) if isinstance(value, str | list) else None
        if elem is None:
            out.add_new(key, vr, value)
        else:
            out._dict[key] = elem

    def _apply(
        self, src: Dataset, out: Dataset, t: Any, vr: str, act: Act, raw: Any, enc: Any
    ) -> None:
        if act is Act.WALK or act is Act.KEEP:  # K on a sequence: kept, items cleaned
            if vr != "SQ":
                _put(out, t, raw)
                return
            items = src[t].value or ()
            out.add_new(t, "SQ", Sequence([self.walk(item) for item in items]))
        elif act is Act.EMPTY:
            if vr == "SQ":
                out.add_new(t, "SQ", [])
            elif enc is not None and vr in _EMPTY_STR_VRS and not _none_as_empty():
                out._dict[t] = RawDataElement(t, vr, 0, b"", 0, enc[0], enc[1], True, False)
            else:
                out.add_new(t, vr, "" if vr in _STRING_VRS else None)
        elif act is Act.DUMMY:
            if vr == "UI":
                self._remap(src, out, t, vr, raw, enc)
            elif vr == "SQ":
                out.add_new(t, "SQ", [])
            else:
                self._emit(out, t, vr, _DUMMY.get(vr), enc)
        elif act is Act.UID:
            if vr == "UI":
                self._remap(src, out, t, vr, raw, enc)
            else:
                out.add_new(t, vr, [] if vr == "SQ" else None)
        elif act is Act.SHIFT:
            if vr in ("DA", "DT"):
                self._shift(out, t, vr, self._value(src, t, vr, raw), enc)
            else:
                _put(out, t, raw)
        elif act is Act.CLEAN:
            if vr in _TEXT_VRS and vr != "CS":
                value = self._value(src, t, vr, raw)
                values = list(value) if isinstance(value, MultiValue | list) else [value or ""]
                results = [self.index().clean_with_reasons(str(v)) for v in values]
                self._note_cleaned(t, results)
                cleaned: Any = [text for text, _why in results]
                if not isinstance(value, MultiValue | list):
                    cleaned = cleaned[0]
                self._emit(out, t, vr, cleaned, enc)
            elif vr == "SQ":
                out.add_new(t, "SQ", Sequence([self.walk(i) for i in src[t].value or ()]))
            else:
                _put(out, t, raw)

    def _note_cleaned(self, tag: Any, results: list[tuple[str, list[tuple[str, str]]]]) -> None:
        """One review line per cleaned element: what was removed and whose value it matched
        (the kind and source element only, never the value)."""
        found = [r for _text, why in results for r in why]
        if not found:
            return
        keyword = keyword_for_tag(int(tag)) or f"({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X})"
        sources = sorted({f"{_KIND_WORDS.get(kind, kind)} of {source}" for kind, source in found})
        emptied = any(text == "" for text, _why in results)
        what = "emptied" if emptied else ("1 word masked" if len(found) == 1 else "words masked")
        line = f"{keyword} {what}: {', '.join(sources)}"
        if line not in self.cleaned:
            self.cleaned.append(line)

    def _remap(self, src: Dataset, out: Dataset, t: Any, vr: str, raw: Any, enc: Any) -> None:
        if not self.t.remap_uids:
            _put(out, t, src.get_item(t))
            return
        value = self._value(src, t, vr, raw)
        remap = self.e.remap_uid
        if isinstance(value, MultiValue | list):
            new: Any = [v if v in UID_dictionary else remap(str(v)) for v in value]
        elif value:
            new = value if value in UID_dictionary else remap(str(value))
        else:
            new = value
        self._emit(out, t, vr, new, enc)

    def _shift(self, out: Dataset, t: Any, vr: str, value: Any, enc: Any) -> None:
        fn = _shift_da if vr == "DA" else _shift_dt
        values = list(value) if isinstance(value, MultiValue | list) else [value]
        shifted: list[str] = []
        for v in values:
            if not v:
                continue
            s = fn(str(v), self.shift)
            if s is None:  # not a date we can shift: do not keep it
                self._emit(out, t, vr, "", enc)
                return
            shifted.append(s)
        single = shifted[0] if shifted else ""
        self._emit(out, t, vr, shifted if len(shifted) > 1 else single, enc)

    def _private(
        self,
        src: Dataset,
        out: Dataset,
        key: Any,
        creators: dict[tuple[int, int], str],
        enc: Any,
    ) -> None:
        t = int(key)
        group, el = t >> 16, t & 0xFFFF
        if 0x10 <= el <= 0xFF:
            item = src.get_item(key)  # raw when possible: reading must not alter the source
            value = item.value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            creators[(group, el)] = str(value).strip(" \x00")
            return
        if el < 0x1000:
            return
        block = el >> 8
        creator = creators.get((group, block))
        if creator is None:
            return
        entry = self.e._safe.get((creator, group, el & 0xFF))
        if entry is None:
            return
        opts = self.e.profile.options
        if entry.action == "date" and not (
            self.t.shift_dates or opts.retain_longitudinal_full_dates
        ):
            return  # a date the Basic Profile would remove
        creator_tag = BaseTag((group << 16) | block)
        if creator_tag not in out._dict:
            _put(out, creator_tag, src.get_item(creator_tag))
        raw = src.get_item(key)
        vr = str(raw.VR) if raw.VR and raw.VR != "UN" else entry.vr
        if entry.action == "date" and self.t.shift_dates:
            value = raw.value
            if isinstance(raw, RawDataElement) and isinstance(value, bytes):
                value = value.decode("latin-1").strip(" \x00")
            else:
                value = src[key].value
            self._shift(out, key, vr, value, None)
        elif vr == "UI" and self.t.remap_uids:
            self._remap(src, out, key, vr, None, None)
        else:
            _put(out, key, raw)
