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
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from pair.deid.profile import DeidProfile
from pair.deid.rawtext import raw_text, single_text
from pair.deid.scanner import Finding, burned_in_risk, pixels_identify, scan
from pair.deid.store import MappingStore, PatientMapping
from pair.deid.table import Act, CompiledTable, compile_table
from pair.deid.walk import Pass, SafePrivate, _dict_vr

# File meta elements that can name the sending system; dropped from the output.
_META_DROP = frozenset(
    {0x00020016, 0x00020017, 0x00020018, 0x00020026, 0x00020027, 0x00020028, 0x00020100, 0x00020102}
)
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_STUDY_UID, _ACCESSION = 0x0020000D, 0x00080050
_IDENTITY_REMOVED, _METHOD, _METHOD_CODES = 0x00120062, 0x00120063, 0x00120064
_LONGITUDINAL = 0x00280303
_MEDIA_SOP_INSTANCE = 0x00020003
_UID_CACHE_LIMIT = 200_000


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
    # descriptors cleaned of identifying words, and why (kind and source element, no values)
    cleaned: list[str] = field(default_factory=list)

    @property
    def review_reasons(self) -> list[str]:
        """What the review page lists for the instance: burned-in risk and cleaned text."""
        return [*self.burned_in_risk, *self.cleaned]

    @property
    def quarantined(self) -> bool:
        """Residual PHI was found: the instance must not be stored as shareable."""
        return bool(self.findings)


class Deidentifier:
    """De-identifies datasets for one facility with one profile and the site secret.

    One object serves one unit of work (an ingest batch = one database transaction): it caches
    the patient mappings and recorded studies it got from the store, which are only valid while
    that transaction lives. Make a new one for every transaction. A store that counts rollbacks
    (``SqlMappingStore.rollbacks``: savepoints too) empties the cache whenever one happened.
    """

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
        self._dispatch = _dispatch(profile)
        # valid for this object's transaction only (see the class docstring)
        self._patients: dict[str, PatientMapping] = {}
        self._studies: set[str] = set()
        self._rollbacks = getattr(store, "rollbacks", 0)
        self._pseudonym_elements: dict[tuple[str, tuple[bool, bool]], tuple[Any, Any]] = {}

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
        pid = _text(ds, _PATIENT_ID, "PatientID").strip()
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

    def _patient(self, ds: Dataset) -> PatientMapping:
        rollbacks = getattr(self.store, "rollbacks", 0)
        if rollbacks != self._rollbacks:  # what the cache holds may have been rolled back
            self._patients.clear()
            self._studies.clear()
            self._rollbacks = rollbacks
        key = self.patient_key(ds)
        mapping = self._patients.get(key)
        if mapping is None:
            mapping = self.store.patient(
                key,
                prefix=self.site_prefix,
                date_shift_days=self.date_shift_for(key),
                patient_id=str(ds.get("PatientID", "") or ""),
                patient_name=str(ds.get("PatientName", "") or ""),
                issuer=str(ds.get("IssuerOfPatientID", "") or ""),
            )
            self._patients[key] = mapping
        return mapping

    # -- the pass ----------------------------------------------------------------------------
    def deidentify(self, ds: Dataset) -> DeidResult:
        """De-identify ``ds`` (left unchanged); the result carries scanner findings and
        burned-in-text risk reasons."""
        mapping = self._patient(ds)
        shift = mapping.date_shift_days if self.table.shift_dates else 0
        ctx = Pass(self, shift, ds)
        out = ctx.walk(ds)
        self._finish(out, ds, mapping.pseudonym)
        if pixels_identify(ds):
            # the header is de-identified, the pixels are not (PAIR never alters them)
            out.PatientIdentityRemoved = "NO"
        original_study = _text(ds, _STUDY_UID, "StudyInstanceUID")
        accession = _text(ds, _ACCESSION, "AccessionNumber")
        if original_study:
            study_uid = str(_text(out, _STUDY_UID, "StudyInstanceUID"))
            if study_uid not in self._studies:
                self.store.record_study(
                    original_study_uid=original_study,
                    original_accession=accession,
                    study_uid=study_uid,
                    pseudonym=mapping.pseudonym,
                )
                self._studies.add(study_uid)
        findings = [
            f
            for f in scan(ctx.index(), out, (mapping.pseudonym,))
            if f.kind not in self._exclude_kinds
        ]
        return DeidResult(
            dataset=out,
            pseudonym=mapping.pseudonym,
            date_shift_days=shift,
            original_study_uid=original_study,
            original_accession=accession,
            findings=findings,
            burned_in_risk=burned_in_risk(ds),
            cleaned=ctx.cleaned,
        )

    def _methods(self) -> list[str]:
        t = self.table
        methods = [f"DICOM PS3.15 {t.edition} Basic Profile", *t.option_labels]
        methods.append(f"table {t.source}"[:64])
        methods.append(self.profile.label[:64])
        return [m[:64] for m in methods]

    def _method_codes(self) -> Sequence:
        items = []
        for value, meaning in self.table.codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        return Sequence(items)

    def _longitudinal(self) -> str:
        opts = self.profile.options
        if opts.retain_longitudinal_modified_dates:
            return "MODIFIED"
        if opts.retain_longitudinal_full_dates:
            return "UNMODIFIED"
        return "REMOVED"

    def _constants_for(self, enc: tuple[bool, bool] | None) -> _Constants | None:
        """The constant elements ``_finish`` writes, as raw elements in encoding ``enc`` (built
        once; raw elements are immutable, so every output can hold the same ones)."""
        if enc is None:
            return None
        key = (self.profile, enc)  # per process: a Deidentifier lives for one batch only
        if key not in _CONSTANTS:
            _CONSTANTS[key] = _Constants.build(
                enc, self._methods(), self._method_codes(), self._longitudinal()
            )
        return _CONSTANTS[key]

    def _finish(self, out: Dataset, ds: Dataset, pseudonym: str) -> None:
        enc = _raw_encoding(out)
        consts = self._constants_for(enc)
        names = self._pseudonym_elements.get((pseudonym, enc)) if enc else None
        if names is None and enc is not None:
            names = (
                raw_text(BaseTag(_PATIENT_NAME), "PN", pseudonym, enc),
                raw_text(BaseTag(_PATIENT_ID), "LO", pseudonym, enc),
            )
            if len(self._pseudonym_elements) >= _UID_CACHE_LIMIT:
                self._pseudonym_elements.clear()
            self._pseudonym_elements[(pseudonym, enc)] = names
        od = out._dict
        if names is not None and names[0] is not None and names[1] is not None:
            od[names[0].tag] = names[0]
            od[names[1].tag] = names[1]
        else:
            out.PatientName = pseudonym
            out.PatientID = pseudonym
        if consts is not None:
            for elem in consts.elements:
                od[elem.tag] = elem
        else:
            out.PatientIdentityRemoved = "YES"
            out.DeidentificationMethod = self._methods()
            out.DeidentificationMethodCodeSequence = self._method_codes()
            out.LongitudinalTemporalInformationModified = self._longitudinal()
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            new_meta = FileMetaDataset()
            nd = new_meta._dict
            for key in sorted(meta._dict, key=int):
                tag = int(key)
                if tag in _META_DROP or tag == 0x00020000:
                    continue
                nd[key] = meta.get_item(key)  # raw stays raw: converted when (if) read
            media = _text(meta, _MEDIA_SOP_INSTANCE, "MediaStorageSOPInstanceUID")
            if media and self.table.remap_uids:
                old = nd[BaseTag(_MEDIA_SOP_INSTANCE)]
                new = self.remap_uid(media)
                # a new element: the source's file meta must stay as it was
                media_elem = raw_text(old.tag, "UI", new, (False, True)) if old.VR == "UI" else None
                nd[old.tag] = media_elem or DataElement(old.tag, str(old.VR), new)
            out.file_meta = new_meta


def _raw_encoding(ds: Dataset) -> tuple[bool, bool] | None:
    enc = ds.original_encoding
    if enc[0] is None or enc[1] is None:
        return None
    return (bool(enc[0]), bool(enc[1]))


def _text(ds: Dataset, tag: int, keyword: str) -> str:
    """``str(ds.<keyword> or "")``, from the raw bytes when that is exact."""
    fast = single_text(ds, tag, _dict_vr)
    return fast if fast is not None else str(ds.get(keyword, "") or "")


@cache
def _dispatch(profile: DeidProfile) -> dict[int, Act]:
    """``tag -> action`` for public tags, with the tags the pass always skips (group lengths,
    file meta, curve groups) mapped to REMOVE, so the pass needs one lookup per element."""
    table = compile_table(profile)
    out: dict[int, Act] = {}
    for tag, act in table.actions.items():
        group = tag >> 16
        skip = (tag & 0xFFFF) == 0 or group == 0x0002 or group in table.curve_groups
        out[tag] = Act.REMOVE if skip else act
    return out


@dataclass(frozen=True)
class _Constants:
    """Raw elements (in one encoding) for the attributes every output gets the same."""

    elements: tuple[RawDataElement, ...]

    @classmethod
    def build(
        cls, enc: tuple[bool, bool], methods: list[str], codes: Sequence, longitudinal: str
    ) -> _Constants | None:
        elements = [
            raw_text(BaseTag(_IDENTITY_REMOVED), "CS", "YES", enc),
            raw_text(BaseTag(_METHOD), "LO", methods, enc),
            _raw_sequence(BaseTag(_METHOD_CODES), codes, enc),
            raw_text(BaseTag(_LONGITUDINAL), "CS", longitudinal, enc),
        ]
        if any(e is None for e in elements):
            return None
        return cls(tuple(e for e in elements if e is not None))


_CONSTANTS: dict[tuple[DeidProfile, tuple[bool, bool]], _Constants | None] = {}


def _raw_sequence(tag: BaseTag, value: Sequence, enc: tuple[bool, bool]) -> RawDataElement | None:
    """The sequence as pydicom writes it, as a defined-length raw element (``None`` when the
    text is not ASCII, so that the output's character set would matter)."""
    for item in value:
        for elem in item:
            if not str(elem.value).isascii():
                return None
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = enc
    write_data_element(fp, DataElement(tag, "SQ", value))
    data = fp.getvalue()
    header = 8 if enc[0] else 12
    length = int.from_bytes(data[header - 4 : header], "little" if enc[1] else "big")
    body = data[header:]
    if length != len(body):
        return None
    return RawDataElement(tag, "SQ", length, body, 0, enc[0], enc[1], True, False)
