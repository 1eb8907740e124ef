"""Residual-PHI scanner and burned-in-text risk flags.

``scan_residual_phi(original, deidentified)`` collects the identifying values of the ORIGINAL
header (names and their components, IDs, birth date, addresses, free-text comments) and looks
for any surviving fragment anywhere in the output: text elements at any depth, private
elements, and the bytes of OB/UN private elements. Findings name the place and the kind of
value, never the value itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pair.deid.rawtext import resolved_vr, single_text, text_values

_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
)
_BYTE_VRS = frozenset({"OB", "UN"})
_MAX_BYTES_SCANNED = 1 << 20
_PIXEL_DATA = 0x7FE00010
_NORMALIZE = {i: " " for i in range(128) if not chr(i).isalnum()}
_WORD = re.compile(r"[^\W_]+")
_PN_SPLIT = re.compile(r"[\^=]")
# Written by PAIR from its own configuration, whatever the input held: Patient Identity Removed,
# De-identification Method and its Code Sequence, Longitudinal Temporal Information Modified.
_OWN_TAGS = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303})
OTHER_DATE = "other-date"  # dates besides the birth date: cleaned from descriptors, not scanned


@dataclass(frozen=True)
class Finding:
    """One surviving identifying fragment: where (tag path) and what kind (never the value)."""

    path: str
    kind: str
    source: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "kind": self.kind,
            "source": self.source,
            "message": self.message,
        }


@cache
def scanner_config() -> dict[str, Any]:
    text = (resources.files("pair.deid") / "data" / "phi-sources.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    data["_stop"] = frozenset(str(w).upper() for w in data["stop_words"])
    return data


def normalize(text: str) -> list[str]:
    """Upper-case words of a value: every ASCII non-alphanumeric character separates words."""
    return text.upper().translate(_NORMALIZE).split()


def _tag_str(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@cache
def _vr_of(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


@cache
def _keyword(tag: int) -> str:
    return str(keyword_for_tag(tag) or "") or f"private {_tag_str(tag)}"


def _walk(
    ds: Dataset,
    want: Callable[[int, str], bool],
    path: str = "",
    skip: frozenset[int] = frozenset(),
) -> Iterator[tuple[str, int, str, Any, bool]]:
    """Elements at every depth (file meta excluded) for which ``want(tag, vr)`` holds, as
    (tag path, tag, VR, value, fast). ``fast``: the value is the list of strings pydicom would
    give, read from the raw bytes without converting the element (see ``rawtext``); otherwise
    VR and value are the converted element's. Only wanted elements (and sequences) are
    converted, and only when their raw bytes do not tell exactly."""
    items = ds._dict
    for key in list(items):
        tag = int(key)
        if tag in skip:
            continue
        raw = items[key]
        if type(raw) is RawDataElement and raw.value is None:
            raw = ds[key]  # a deferred read, as Dataset.get_item does
        vr = str(raw.VR) if raw.VR else _vr_of(tag)
        if vr == "SQ":
            here = f"{path}{_tag_str(tag)}"
            for i, item in enumerate(ds[key].value or ()):
                yield from _walk(item, want, f"{here}[{i}]", skip)
        elif want(tag, vr):
            if type(raw) is RawDataElement:
                real_vr = resolved_vr(raw, tag, _vr_of)
                if real_vr is not None and real_vr in _TEXT_VRS:
                    values = text_values(raw, real_vr, pn=True)
                    if values is not None:
                        yield f"{path}{_tag_str(tag)}", tag, real_vr, values, True
                        continue
            elem = ds[key]
            yield f"{path}{_tag_str(tag)}", tag, str(elem.VR), elem.value, False


def _strings(value: Any) -> Iterable[str]:
    if value is None or value == "":
        return ()
    if isinstance(value, bytes):
        return (value.decode("latin-1"),)
    if isinstance(value, (MultiValue, list, tuple)):
        return [str(v) for v in value]
    return (str(value),)


@dataclass
class PhiIndex:
    """Identifying words and phrases of one original header, keyed by what they came from."""

    words: dict[str, tuple[str, str]] = field(default_factory=dict)
    phrases: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)

    def add_word(self, word: str, kind: str, source: str) -> None:
        found = self.words.get(word)
        if found is None or found[0] == OTHER_DATE:
            self.words[word] = (kind, source)

    def add_phrase(self, words: list[str], kind: str, source: str) -> None:
        if len(words) == 1:
            self.add_word(words[0], kind, source)
        elif words:
            bucket = self.phrases.setdefault(words[0], {})
            phrase = " ".join(words)
            found = bucket.get(phrase)
            if found is None or found[0] == OTHER_DATE:
                bucket[phrase] = (kind, source)

    def __bool__(self) -> bool:
        return bool(self.words or self.phrases)

    def match(self, text: str, *, other_dates: bool = False) -> list[tuple[str, str]]:
        """The (kind, source) of every identifying fragment found in ``text`` (dates other
        than the birth date only when ``other_dates``)."""
        words = normalize(text)
        if not words:
            return []
        found: list[tuple[str, str]] = []
        padded: str | None = None
        for w in set(words):
            hit = self.words.get(w)
            if hit is None and len(w) > 8 and w[:8].isdigit():
                hit = self.words.get(w[:8])  # a date-time starting with an identifying date
                if hit is not None and hit[0] not in ("date", OTHER_DATE):
                    hit = None
            if hit is not None and (other_dates or hit[0] != OTHER_DATE):
                found.append(hit)
            candidates = self.phrases.get(w)
            if candidates:
                if padded is None:
                    padded = f" {' '.join(words)} "
                for phrase, origin in candidates.items():
                    if f" {phrase} " in padded and (other_dates or origin[0] != OTHER_DATE):
                        found.append(origin)
        return found

    def clean(self, text: str) -> str:
        """``text`` with identifying words masked; empty when a whole phrase survives."""
        return self.clean_with_reasons(text)[0]

    def clean_with_reasons(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        """``clean`` and the (kind, source) of what it removed, so the review can say why.

        Only what the index holds is removed: a word of the original's names, identifiers,
        addresses or institution (what the scanner flags), or one of its dates; the rest of the
        text is kept as written."""
        why: list[tuple[str, str]] = []

        def mask(m: re.Match[str]) -> str:
            hit = self.words.get(m.group(0).upper())
            if hit is None:
                return m.group(0)
            why.append(hit)
            return "***"

        masked = _WORD.sub(mask, text)
        phrases = self.match(masked, other_dates=True)
        if phrases:
            return "", why + phrases
        return masked, why


@cache
def _source_tags() -> dict[int, str]:
    cfg = scanner_config()
    by_tag: dict[int, str] = {}
    for group in ("names", "ids", "dates", "addresses", "institutions", "free_text"):
        for kw in cfg[group]:
            tag = tag_for_keyword(kw)
            if tag is None:
                raise ValueError(f"unknown keyword {kw!r} in phi-sources.yaml")
            by_tag[int(tag)] = group
    return by_tag


def _scan_wanted(tag: int, vr: str) -> bool:
    return vr in _TEXT_VRS or (vr in _BYTE_VRS and tag != _PIXEL_DATA)


def _name_words(value: str, min_len: int, stop: frozenset[str]) -> list[str]:
    return [w for w in normalize(value) if len(w) >= min_len and w not in stop]


def collect_phi(ds: Dataset, *, all_dates: bool = False) -> PhiIndex:
    """Identifying values of an original header. ``all_dates`` adds every DA value (used to
    clean descriptors, not by the scanner: the output's own dates are shifted copies)."""
    cfg = scanner_config()
    stop: frozenset[str] = cfg["_stop"]
    min_name = int(cfg["min_name_token"])
    by_tag = _source_tags()

    def want(tag: int, vr: str) -> bool:
        return vr == "PN" or tag in by_tag or (all_dates and vr == "DA")

    index = PhiIndex()
    for _path, tag, vr, raw_value, fast in _walk(ds, want):
        kind = by_tag.get(tag, "")
        source = _keyword(tag)
        strings = raw_value if fast else _strings(raw_value)
        if vr == "PN":
            for value in strings:
                for part in _PN_SPLIT.split(value):
                    for w in _name_words(part, min_name, stop):
                        index.add_word(w, "name", source)
                whole = _name_words(value.replace("^", " ").replace("=", " "), 1, frozenset())
                if len(whole) >= 2:
                    index.add_phrase(whole, "name", source)
        elif kind == "ids":
            for value in strings:
                value = value.strip()
                if len(value) < int(cfg["min_id"]):
                    continue
                if value.isdigit() and len(value) < int(cfg["min_numeric_id"]):
                    continue
                index.add_phrase(normalize(value), "identifier", source)
        elif kind == "dates" or (all_dates and vr == "DA"):
            label = "date" if kind == "dates" else OTHER_DATE
            for value in strings:
                digits = "".join(c for c in value if c.isdigit())
                if len(digits) == 8:
                    index.add_word(digits, label, source)
                    index.add_phrase([digits[:4], digits[4:6], digits[6:]], label, source)
        elif kind in ("addresses", "institutions"):
            label = "address" if kind == "addresses" else "institution"
            for value in strings:
                words = normalize(value)
                for w in words:
                    if w in stop:
                        continue
                    if (w.isdigit() and len(w) >= 5) or (not w.isdigit() and len(w) >= 3):
                        index.add_word(w, label, source)
                index.add_phrase(words, label, source)
        elif kind == "free_text":
            n = int(cfg["shingle"])
            for value in strings:
                words = normalize(value)
                if len(words) >= n:
                    for i in range(len(words) - n + 1):
                        index.add_phrase(words[i : i + n], "free-text", source)
                elif len("".join(words)) >= int(cfg["min_free_text"]):
                    index.add_phrase(words, "free-text", source)
    return index


def _own_pattern(own: Iterable[str]) -> re.Pattern[str] | None:
    values = sorted({v.strip() for v in own if v and v.strip()}, key=len, reverse=True)
    if not values:
        return None
    return re.compile("|".join(re.escape(v) for v in values), re.IGNORECASE)


def scan(index: PhiIndex, deidentified: Dataset, own: Iterable[str] = ()) -> list[Finding]:
    """Findings for every output element holding a fragment from ``index``.

    ``own``: values PAIR wrote itself (the patient's pseudonym, which starts with the facility
    code). They are blanked out of each value before matching, so a patient whose surname is the
    facility code is not held for the pseudonym; the same word elsewhere still is."""
    findings: list[Finding] = []
    if not index:
        return findings
    own_re = _own_pattern(own)
    seen: set[tuple[str, str]] = set()
    elements = list(_walk(deidentified, _scan_wanted, skip=_OWN_TAGS))
    meta = getattr(deidentified, "file_meta", None)
    if meta is not None:
        elements.extend(_walk(meta, _scan_wanted))
    for path, tag, vr, value, fast in elements:
        values: Iterable[str]
        if fast:
            values = value
        elif vr in _TEXT_VRS:
            values = _strings(value)
        elif vr in _BYTE_VRS and tag != _PIXEL_DATA:
            if not isinstance(value, bytes) or len(value) > _MAX_BYTES_SCANNED:
                continue
            values = (value.decode("latin-1"),)
        else:
            continue
        for value in values:
            if own_re is not None:
                value = own_re.sub(" ", value)
            for kind, source in index.match(value):
                if (path, source) in seen:
                    continue
                seen.add((path, source))
                findings.append(
                    Finding(
                        path,
                        kind,
                        source,
                        f"{path} ({vr}) contains a {kind} fragment of the original {source}",
                    )
                )
    return findings


def scan_residual_phi(
    original: Dataset,
    deidentified: Dataset,
    *,
    exclude_kinds: frozenset[str] = frozenset(),
    own: Iterable[str] = (),
) -> list[Finding]:
    """Every surviving fragment of the original's identifying values in the output."""
    findings = scan(collect_phi(original), deidentified, own)
    return [f for f in findings if f.kind not in exclude_kinds]


@cache
def _tag_of(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"unknown keyword {keyword!r}")
    return int(tag)


def _get_str(ds: Dataset, keyword: str) -> str:
    """``str(ds.get(keyword, ""))``, from the raw bytes when that is exact."""
    fast = single_text(ds, _tag_of(keyword), _vr_of)
    return fast if fast is not None else str(ds.get(keyword, ""))


def _get_strings(ds: Dataset, keyword: str) -> Iterable[str]:
    """``_strings(ds.get(keyword, ""))``, from the raw bytes when that is exact."""
    tag = _tag_of(keyword)
    raw = ds._dict.get(tag)  # type: ignore[call-overload]
    if raw is None:
        return ()
    if type(raw) is RawDataElement:
        vr = resolved_vr(raw, tag, _vr_of)
        values = text_values(raw, vr) if vr is not None else None
        if values is not None:
            return () if values == [""] else values
    return _strings(ds.get(keyword, ""))


def pixels_identify(ds: Dataset) -> bool:
    """The header itself says the pixels identify the patient (burned-in annotation or
    recognizable visual features): PS3.3 then forbids Patient Identity Removed YES, which
    means the identity is gone from the attributes AND the pixel data."""
    return any(
        _get_str(ds, kw).strip().upper() == "YES"
        for kw in ("BurnedInAnnotation", "RecognizableVisualFeatures")
    )


def burned_in_risk(ds: Dataset) -> list[str]:
    """Reasons to review the pixels for burned-in text (nothing is altered)."""
    cfg = scanner_config()["burned_in"]
    reasons: list[str] = []
    if _get_str(ds, "BurnedInAnnotation").upper() == "YES":
        reasons.append("BurnedInAnnotation is YES")
    if _get_str(ds, "RecognizableVisualFeatures").upper() == "YES":
        reasons.append("RecognizableVisualFeatures is YES")
    sop_class = _get_str(ds, "SOPClassUID")
    if sop_class in cfg["secondary_capture_sop_classes"]:
        reasons.append("secondary capture SOP class")
    if sop_class in cfg["document_sop_classes"]:
        reasons.append("encapsulated document SOP class")
    modality = _get_str(ds, "Modality").upper()
    if modality in cfg["risky_modalities"]:
        reasons.append(f"modality {modality} often carries burned-in text")
    image_type = {str(v).upper() for v in _get_strings(ds, "ImageType")}
    for risky in cfg["risky_image_types"]:
        if risky in image_type:
            reasons.append(f"ImageType contains {risky}")
    for kw in ("SeriesDescription", "ProtocolName", "StudyDescription"):
        text = f" {' '.join(normalize(_get_str(ds, kw)))} "
        for word in cfg["dose_screen_words"]:
            if f" {word} " in text:
                reasons.append(f"{kw} suggests a dose screen or protocol page")
                break
    return reasons


__all__ = [
    "Finding",
    "PhiIndex",
    "burned_in_risk",
    "collect_phi",
    "pixels_identify",
    "scan",
    "scan_residual_phi",
]
