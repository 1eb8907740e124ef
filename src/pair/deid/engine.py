"""The de-identification engine: one pass over every element, nested sequences and private
elements included, driven by the table compiled once per profile.

UIDs are remapped with a keyed hash (HMAC-SHA256 with the site secret) so that the same
original UID always becomes the same ``2.25.<int>`` at this site, across files, series,
studies and re-imports. Pseudonyms and per-patient date shifts come from the mapping store.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from pair.deid.profile import DeidProfile
from pair.deid.scanner import Finding, PhiIndex, burned_in_risk, collect_phi, scan
from pair.deid.store import MappingStore
from pair.deid.table import Act, CompiledTable, compile_table

_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN", "CS", "AE"})
_STRING_VRS = _TEXT_VRS | {"DA", "DT", "TM", "UI", "UR", "AS", "DS", "IS"}
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
# File meta elements that can name the sending system; dropped from the output.
_META_DROP = frozenset(
    {0x00020016, 0x00020017, 0x00020018, 0x00020026, 0x00020027, 0x00020028, 0x00020100, 0x00020102}
)
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_MEDIA_SOP_INSTANCE = 0x00020003
_UID_CACHE_LIMIT = 200_000


@dataclass(frozen=True)
class SafePrivate:
    vr: str
    action: str  # keep | date


@cache
def safe_private_dictionary() -> tuple[str, dict[tuple[str, int, int], SafePrivate]]:
    """(version, {(creator, group, element offset): entry}) from ``data/safe-private.yaml``."""
    text = (resources.files("pair.deid") / "data" / "safe-private.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    entries = {
        (str(e["creator"]).strip(), int(e["group"]), int(e["element"])): SafePrivate(
            str(e["vr"]), str(e["action"])
        )
        for e in data["elements"]
    }
    return str(data["version"]), entries


@dataclass
class DeidResult:
    dataset: Dataset
    pseudonym: str
    date_shift_days: int
    original_study_uid: str
    original_accession: str
    findings: list[Finding] = field(default_factory=list)
    burned_in_risk: list[str] = field(default_factory=list)

    @property
    def quarantined(self) -> bool:
        """Residual PHI was found: the instance must not be stored as shareable."""
        return bool(self.findings)


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


class Deidentifier:
    """De-identifies datasets for one facility with one profile and the site secret."""

    def __init__(
        self,
        profile: DeidProfile,
        secret: bytes,
        store: MappingStore,
        site_prefix: str,
        uid_root: str = "2.25",
    ) -> None:
        if not secret:
            raise ValueError("the site secret must not be empty")
        uid_root = uid_root.rstrip(".")
        if not uid_root or len(uid_root) > 40:
            raise ValueError("uid_root must be 1-40 characters")
        self.profile = profile
        self.table: CompiledTable = compile_table(profile)
        self.store = store
        self.site_prefix = site_prefix
        self.uid_root = uid_root
        self._secret = secret
        self._uid_digits = min(38, 64 - len(uid_root) - 1)
        self._uid_cache: dict[str, str] = {}
        self._safe: dict[tuple[str, int, int], SafePrivate] = (
            safe_private_dictionary()[1] if profile.options.retain_safe_private else {}
        )
        self._exclude_kinds = (
            frozenset({"institution"})
            if profile.options.retain_institution_identity
            else frozenset()
        )

    # -- keyed derivations -------------------------------------------------------------------
    def _mac(self, label: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{label}\x00{value}".encode(), hashlib.sha256).digest()

    def remap_uid(self, uid: str) -> str:
        """The deterministic replacement for an instance-type UID: HMAC-SHA256 with the site
        secret over (facility prefix, UID), so one original study sent by two facilities
        becomes two studies, each under that facility's pseudonym."""
        uid = uid.strip().rstrip("\x00")
        if not uid:
            return uid
        new = self._uid_cache.get(uid)
        if new is None:
            mac = self._mac("uid", f"{self.site_prefix}\x00{uid}")
            number = int.from_bytes(mac[:16], "big") % (10**self._uid_digits)
            new = f"{self.uid_root}.{number}"
            if len(self._uid_cache) >= _UID_CACHE_LIMIT:
                self._uid_cache.clear()
            self._uid_cache[uid] = new
        return new

    def patient_key(self, ds: Dataset) -> str:
        """HMAC of the patient's identity within the facility (PatientID, else name+birth date,
        else the study), so the store never needs the raw identity as a key."""
        pid = str(ds.get("PatientID", "") or "").strip()
        if pid:
            basis = f"id\x00{pid}"
        else:
            name = str(ds.get("PatientName", "") or "").strip()
            birth = str(ds.get("PatientBirthDate", "") or "").strip()
            basis = (
                f"name\x00{name}\x00{birth}"
                if name
                else (f"study\x00{ds.get('StudyInstanceUID', '')}")
            )
        return self._mac("patient", basis).hex()

    def date_shift_for(self, key: str) -> int:
        lo, hi = self.profile.date_shift.min_days, self.profile.date_shift.max_days
        n = int.from_bytes(self._mac("dateshift", key)[:8], "big")
        return lo + n % (hi - lo + 1)

    # -- the pass ----------------------------------------------------------------------------
    def deidentify(self, ds: Dataset) -> DeidResult:
        """De-identify ``ds`` (left unchanged); the result carries scanner findings and
        burned-in-text risk reasons."""
        key = self.patient_key(ds)
        mapping = self.store.patient(
            key,
            prefix=self.site_prefix,
            date_shift_days=self.date_shift_for(key),
            patient_id=str(ds.get("PatientID", "") or ""),
            patient_name=str(ds.get("PatientName", "") or ""),
            issuer=str(ds.get("IssuerOfPatientID", "") or ""),
        )
        shift = mapping.date_shift_days if self.table.shift_dates else 0
        ctx = _Pass(self, shift, ds)
        out = ctx.walk(ds)
        self._finish(out, ds, mapping.pseudonym)
        original_study = str(ds.get("StudyInstanceUID", "") or "")
        accession = str(ds.get("AccessionNumber", "") or "")
        if original_study:
            self.store.record_study(
                original_study_uid=original_study,
                original_accession=accession,
                study_uid=str(out.get("StudyInstanceUID", "")),
                pseudonym=mapping.pseudonym,
            )
        findings = [f for f in scan(ctx.index(), out) if f.kind not in self._exclude_kinds]
        return DeidResult(
            dataset=out,
            pseudonym=mapping.pseudonym,
            date_shift_days=shift,
            original_study_uid=original_study,
            original_accession=accession,
            findings=findings,
            burned_in_risk=burned_in_risk(ds),
        )

    def _finish(self, out: Dataset, ds: Dataset, pseudonym: str) -> None:
        t = self.table
        out.PatientName = pseudonym
        out.PatientID = pseudonym
        out.PatientIdentityRemoved = "YES"
        methods = [f"DICOM PS3.15 {t.edition} Basic Profile", *t.option_labels]
        methods.append(f"table {t.source}"[:64])
        methods.append(self.profile.label[:64])
        out.DeidentificationMethod = [m[:64] for m in methods]
        items = []
        for value, meaning in t.codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        out.DeidentificationMethodCodeSequence = Sequence(items)
        opts = self.profile.options
        if opts.retain_longitudinal_modified_dates:
            out.LongitudinalTemporalInformationModified = "MODIFIED"
        elif opts.retain_longitudinal_full_dates:
            out.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            out.LongitudinalTemporalInformationModified = "REMOVED"
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            new_meta = FileMetaDataset()
            for elem in meta:
                tag = int(elem.tag)
                if tag in _META_DROP or tag == 0x00020000:
                    continue
                new_meta.add(elem)
            media = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
            if media and self.table.remap_uids:
                new_meta[_MEDIA_SOP_INSTANCE].value = self.remap_uid(media)
            out.file_meta = new_meta


class _Pass:
    """State of one ``deidentify`` call."""

    def __init__(self, engine: Deidentifier, shift: int, original: Dataset) -> None:
        self.e = engine
        self.t = engine.table
        self.shift = shift
        self.original = original
        self._index: PhiIndex | None = None

    def index(self) -> PhiIndex:
        """Identifying values of the original (all dates included, for cleaning)."""
        if self._index is None:
            self._index = collect_phi(self.original, all_dates=True)
        return self._index

    def walk(self, src: Dataset) -> Dataset:
        out = Dataset()
        enc = getattr(src, "original_encoding", (None, None))
        if enc[0] is not None and enc[1] is not None:
            out.set_original_encoding(enc[0], enc[1], src.original_character_set)
        actions = self.t.actions
        curve = self.t.curve_groups
        creators: dict[tuple[int, int], str] = {}
        for tag in sorted(src.keys()):
            t = int(tag)
            group = t >> 16
            if group & 1:
                if self.e._safe:
                    self._private(src, out, tag, creators)
                continue
            if (t & 0xFFFF) == 0 or group == 0x0002 or group in curve:
                continue
            act = actions.get(t, Act.DEFAULT)
            if act is Act.REMOVE:
                continue
            raw = src.get_item(tag)
            vr = str(raw.VR) if raw.VR else _dict_vr(t)
            if act is Act.DEFAULT:
                if vr == "SQ":
                    act = Act.WALK
                elif vr == "UI":
                    if t in self.t.never_remap or not self.t.remap_uids:
                        _put(out, tag, raw)
                        continue
                    act = Act.UID
                elif vr in ("DA", "DT") and self.t.shift_dates:
                    act = Act.SHIFT
                else:
                    _put(out, tag, raw)
                    continue
            self._apply(src, out, tag, vr, act, raw)
        return out

    def _apply(self, src: Dataset, out: Dataset, t: Any, vr: str, act: Act, raw: Any) -> None:
        if act is Act.KEEP and vr != "SQ":
            _put(out, t, raw)
        elif act is Act.WALK or act is Act.KEEP:  # K on a sequence: kept, items cleaned
            if vr != "SQ":
                _put(out, t, raw)
                return
            items = src[t].value or ()
            out.add_new(t, "SQ", Sequence([self.walk(item) for item in items]))
        elif act is Act.EMPTY:
            out.add_new(t, vr, [] if vr == "SQ" else ("" if vr in _STRING_VRS else None))
        elif act is Act.DUMMY:
            if vr == "UI":
                self._remap(src, out, t, vr)
            elif vr == "SQ":
                out.add_new(t, "SQ", [])
            else:
                out.add_new(t, vr, _DUMMY.get(vr))
        elif act is Act.UID:
            if vr == "UI":
                self._remap(src, out, t, vr)
            else:
                out.add_new(t, vr, [] if vr == "SQ" else None)
        elif act is Act.SHIFT:
            if vr in ("DA", "DT"):
                self._shift(out, t, vr, src[t].value)
            else:
                _put(out, t, raw)
        elif act is Act.CLEAN:
            if vr in _TEXT_VRS and vr != "CS":
                value = src[t].value
                if isinstance(value, MultiValue):
                    cleaned: Any = [self.index().clean(str(v)) for v in value]
                else:
                    cleaned = self.index().clean(str(value or ""))
                out.add_new(t, vr, cleaned)
            elif vr == "SQ":
                out.add_new(t, "SQ", Sequence([self.walk(i) for i in src[t].value or ()]))
            else:
                _put(out, t, raw)

    def _remap(self, src: Dataset, out: Dataset, t: int, vr: str) -> None:
        if not self.t.remap_uids:
            _put(out, t, src.get_item(t))
            return
        value = src[t].value
        remap = self.e.remap_uid
        if isinstance(value, MultiValue):
            new: Any = [v if v in UID_dictionary else remap(str(v)) for v in value]
        elif value:
            new = value if value in UID_dictionary else remap(str(value))
        else:
            new = value
        out.add_new(t, vr, new)

    def _shift(self, out: Dataset, t: Any, vr: str, value: Any) -> None:
        fn = _shift_da if vr == "DA" else _shift_dt
        values = list(value) if isinstance(value, MultiValue) else [value]
        shifted: list[str] = []
        for v in values:
            if not v:
                continue
            s = fn(str(v), self.shift)
            if s is None:  # not a date we can shift: do not keep it
                out.add_new(t, vr, "")
                return
            shifted.append(s)
        out.add_new(t, vr, shifted if len(shifted) > 1 else (shifted[0] if shifted else ""))

    def _private(
        self, src: Dataset, out: Dataset, key: Any, creators: dict[tuple[int, int], str]
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
            self._shift(out, key, vr, value)
        elif vr == "UI" and self.t.remap_uids:
            self._remap(src, out, key, vr)
        else:
            _put(out, key, raw)
