"""Cohort query strings and the selection of series for evaluation.

A cohort query is ``key=value[,value...]`` terms separated by ``;``, e.g.
``modality=CR,DX;covid19_positive=Yes,No;date=20200101-20201231;report=rsna-cxr-covid:typical``.
Patient-level filters go through ``pair.clinical.service.search_cases`` (THE cohort query of the
node); series-level filters (modality, study date, report category) are applied here.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.clinical.dictionary import load_dictionary
from pair.clinical.service import CaseQuery, search_cases
from pair.core.errors import Invalid
from pair.reporting.service import final_labels
from pair.repository.models import Instance, Patient, Series, Study

KEYS = ("modality", "date", "covid19_positive", "sex", "age_band", "report")
_DATE = re.compile(r"^\d{8}$")
_MODALITY = re.compile(r"^[A-Z]{2,4}$")


@dataclass(frozen=True)
class Cohort:
    """Parsed cohort criteria; empty tuples mean 'no restriction'."""

    modality: tuple[str, ...] = ()
    date_from: str | None = None
    date_to: str | None = None
    covid19_positive: tuple[str, ...] = ()
    sex: tuple[str, ...] = ()
    age_band: tuple[str, ...] = ()
    report_module: str | None = None
    report_values: tuple[str, ...] = ()

    def to_query(self) -> str:
        """The canonical query string (parse(to_query()) == self)."""
        terms = []
        for key in ("modality", "covid19_positive", "sex", "age_band"):
            values = getattr(self, key)
            if values:
                terms.append(f"{key}={','.join(values)}")
        if self.date_from or self.date_to:
            terms.append(f"date={self.date_from or ''}-{self.date_to or ''}")
        if self.report_module:
            terms.append(f"report={self.report_module}:{','.join(self.report_values)}")
        return ";".join(terms)


def _values(term: str, key: str, raw: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    if not values:
        raise Invalid(f"Cohort term {term!r}: no value given for {key}.")
    return values


def _enum(term: str, key: str, raw: str, allowed: list[str]) -> tuple[str, ...]:
    out = []
    for v in _values(term, key, raw):
        match = next((a for a in allowed if a.lower() == v.lower()), None)
        if match is None:
            raise Invalid(
                f"Cohort term {term!r}: {key} value {v!r} is not allowed; "
                f"use one of: {', '.join(allowed)}."
            )
        out.append(match)
    return tuple(out)


def parse_cohort(text: str) -> Cohort:
    """Parse a cohort query; each error names the term, what is wrong and what is allowed."""
    d = load_dictionary()
    found: dict[str, Any] = {}
    for term in (t.strip() for t in text.split(";")):
        if not term:
            continue
        key, sep, raw = term.partition("=")
        key = key.strip().lower()
        if not sep:
            raise Invalid(f"Cohort term {term!r} is not key=value; keys: {', '.join(KEYS)}.")
        if key not in KEYS:
            raise Invalid(
                f"Cohort term {term!r}: unknown key {key!r}; use one of: {', '.join(KEYS)}."
            )
        if key in found:
            raise Invalid(f"Cohort term {term!r}: {key} is given twice; list values with commas.")
        raw = raw.strip()
        if key == "modality":
            mods = tuple(v.upper() for v in _values(term, key, raw))
            bad = [m for m in mods if not _MODALITY.match(m)]
            if bad:
                raise Invalid(
                    f"Cohort term {term!r}: {bad[0]!r} is not a DICOM modality code "
                    "(e.g. CR, DX, CT)."
                )
            found[key] = mods
        elif key == "date":
            lo, dash, hi = raw.partition("-")
            if not dash:
                raise Invalid(
                    f"Cohort term {term!r}: use date=YYYYMMDD-YYYYMMDD (either side may be empty)."
                )
            for side in (lo, hi):
                if side and not _DATE.match(side):
                    raise Invalid(f"Cohort term {term!r}: {side!r} is not a date YYYYMMDD.")
            if lo and hi and lo > hi:
                raise Invalid(f"Cohort term {term!r}: the start {lo} is after the end {hi}.")
            found["date_from"], found["date_to"] = lo or None, hi or None
        elif key in ("covid19_positive", "sex"):
            f = d.get(key)
            found[key] = _enum(term, key, raw, list(f.values) if f else [])
        elif key == "age_band":
            found[key] = _enum(term, key, raw, [b.label for b in d.age_bands])
        else:  # report=module:value,value
            module, colon, vals = raw.partition(":")
            if not colon or not module.strip():
                raise Invalid(
                    f"Cohort term {term!r}: use report=MODULE:VALUE[,VALUE] "
                    "(e.g. report=rsna-cxr-covid:typical)."
                )
            found["report_module"] = module.strip()
            found["report_values"] = _values(term, key, vals)
    return Cohort(**found)


@dataclass
class CohortCase:
    """One evaluation case: a series (the manifest's aggregation combines its instances)."""

    case_id: str  # de-identified Series Instance UID
    study_uid: str
    patient_pk: int
    pseudonym: str
    facility_id: int
    site: str
    modality: str
    manufacturer: str
    study_date: str
    sex: str
    age_band: str
    clinical: dict[str, Any] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)
    shas: list[str] = field(default_factory=list)  # SHA-256 of each file (content-addressed)


def _patients(session: Session, facility_id: int | None, c: Cohort) -> dict[int, dict[str, Any]]:
    """Patient pk -> clinical record, through search_cases (one query per value combination)."""
    out: dict[int, dict[str, Any]] = {}
    combos = itertools.product(
        c.covid19_positive or (None,), c.sex or (None,), c.age_band or (None,)
    )
    for covid, sex, band in combos:
        offset = 0
        while True:
            q = CaseQuery(
                covid19_positive=covid,
                sex=sex,
                age_band=band,
                study_date_from=c.date_from,
                study_date_to=c.date_to,
                limit=1000,
                offset=offset,
            )
            page = search_cases(session, facility_id, q)
            for row in page.items:
                out[row.id] = row.clinical
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
    return out


AGE_UNITS_PER_YEAR = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}  # PS3.5 6.2 AS units


def header_age_years(value: str | None) -> int | None:
    """Completed years from an Age String (PS3.5 6.2: ``nnnD|W|M|Y``, e.g. ``045Y``); None when
    absent or malformed."""
    text = (value or "").strip().upper()
    if len(text) != 4 or not text[:3].isdigit() or text[3] not in AGE_UNITS_PER_YEAR:
        return None
    return int(int(text[:3]) / AGE_UNITS_PER_YEAR[text[3]])


def age_band_of(age: Any) -> str:
    if not isinstance(age, int) or isinstance(age, bool):
        return ""
    band = next((b for b in load_dictionary().age_bands if b.min <= age < b.max), None)
    return band.label if band else ""


def select_cohort(
    session: Session, storage_root: Path, facility_id: int | None, cohort: Cohort
) -> list[CohortCase]:
    """Series of the facility (None: every facility) matching the cohort, in a stable order."""
    patients = _patients(session, facility_id, cohort)
    if not patients:
        return []
    stmt = (
        select(Series, Study, Patient)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(Patient.id.in_(list(patients)))
        .order_by(Patient.pseudonym, Study.study_date, Study.id, Series.series_number, Series.id)
    )
    if cohort.modality:
        stmt = stmt.where(Series.modality.in_(cohort.modality))
    if cohort.date_from:
        stmt = stmt.where(Study.study_date >= cohort.date_from)
    if cohort.date_to:
        stmt = stmt.where(Study.study_date <= cohort.date_to)
    rows = session.execute(stmt).all()
    if cohort.report_module:
        wanted = {v.lower() for v in cohort.report_values}
        studies = {
            lab.study_uid
            for lab in final_labels(session, facility_id)
            if lab.module_id == cohort.report_module and str(lab.summary_value).lower() in wanted
        }
        rows = [r for r in rows if r[1].study_uid in studies]
    sites = {f.id: f.name for f in session.scalars(select(Facility))}
    series_pks = [r[0].id for r in rows]
    paths: dict[int, list[Path]] = {pk: [] for pk in series_pks}
    shas: dict[int, list[str]] = {pk: [] for pk in series_pks}
    for start in range(0, len(series_pks), 500):
        chunk = series_pks[start : start + 500]
        for inst in session.scalars(
            select(Instance)
            .where(Instance.series_pk.in_(chunk))
            .order_by(Instance.series_pk, Instance.instance_number, Instance.id)
        ):
            paths[inst.series_pk].append(storage_root / inst.storage_path)
            shas[inst.series_pk].append(inst.sha256)
    cases = []
    for series, study, patient in rows:
        clinical = patients[patient.id]
        sex = clinical.get("sex") or {"M": "Male", "F": "Female"}.get(patient.patient_sex, "")
        cases.append(
            CohortCase(
                case_id=series.series_uid,
                study_uid=study.study_uid,
                patient_pk=patient.id,
                pseudonym=patient.pseudonym,
                facility_id=patient.facility_id,
                site=sites.get(patient.facility_id, ""),
                modality=series.modality,
                manufacturer=series.manufacturer,
                study_date=study.study_date,
                sex=str(sex or ""),
                # the clinical record first; else PatientAge, which de-identification keeps
                age_band=age_band_of(clinical.get("age_at_index"))
                or age_band_of(header_age_years(study.patient_age)),
                clinical=clinical,
                paths=paths[series.id],
                shas=shas[series.id],
            )
        )
    return cases
