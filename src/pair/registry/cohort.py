"""The registry's cohort query: one typed, validated ``CohortQuery`` and one function that runs it.

Criteria combine with AND; the values listed for one criterion combine with OR. A criterion is
checked against the data it names, so a misspelt field, code or category is a precise 422:

* ``clinical``: fields of the clinical data dictionary (``pair.clinical``) and their values;
* ``reports``: report module id → summary categories of its latest signed version;
* ``cdes``: CDE element id → value codes (or numbers) from the CDE catalog (``pair.cde``);
* ``sites`` (facility codes), ``modalities``, study dates and submission (received) dates.

Clinical criteria compile through ``pair.clinical.service.clinical_conditions``, the same
conditions the case browser's search (``search_cases``, and through it evaluation cohorts)
uses; report and CDE criteria use the signed labels evaluation uses
(``pair.reporting.labels.final_labels``). The same parser serves the pages,
the API query string and the CLI (``key=value`` terms).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.cde.catalog import catalog
from pair.clinical.dictionary import load_dictionary
from pair.clinical.models import ClinicalRecord
from pair.clinical.service import clinical_conditions
from pair.core.errors import Invalid, NotFound
from pair.reporting.labels import CaseLabel, final_labels
from pair.reporting.loader import modules
from pair.repository.models import Patient, Series, Study

_MODALITY = re.compile(r"^[A-Z]{2,4}$")
LIST_KEYS = {"site": "sites", "modality": "modalities"}
SCALAR_KEYS = (
    "study_date_from",
    "study_date_to",
    "submitted_from",
    "submitted_to",
    "age_min",
    "age_max",
)
GROUP_KEYS = {"clinical": "clinical", "report": "reports", "cde": "cdes"}


class CohortQuery(BaseModel):
    """Cohort criteria; empty means 'no restriction'. Dates are ISO (YYYY-MM-DD)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sites: list[str] = Field(default_factory=list, description="facility codes")
    modalities: list[str] = Field(default_factory=list, description="DICOM modality codes")
    study_date_from: date | None = None
    study_date_to: date | None = None
    submitted_from: date | None = None
    submitted_to: date | None = None
    age_min: int | None = Field(default=None, ge=0, le=200)
    age_max: int | None = Field(default=None, ge=0, le=200, description="exclusive")
    clinical: dict[str, list[str]] = Field(default_factory=dict)
    reports: dict[str, list[str]] = Field(default_factory=dict)
    cdes: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: list[str]) -> list[str]:
        out = [m.strip().upper() for m in v]
        for m in out:
            if not _MODALITY.match(m):
                raise ValueError(f"{m!r} is not a DICOM modality code (e.g. CR, DX, CT)")
        return out

    @field_validator("clinical")
    @classmethod
    def _clinical(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        d = load_dictionary()
        out = {}
        for name, values in v.items():
            f = d.get(name)
            if f is None or f.type not in ("enum", "boolean"):
                choices = [x.name for x in d.fields if x.type in ("enum", "boolean")]
                raise ValueError(
                    f"unknown clinical field {name!r}; use one of: {', '.join(choices)} "
                    "(ages: age_min/age_max)"
                )
            allowed = list(f.values) if f.type == "enum" else ["true", "false"]
            picked = []
            for value in _nonempty(name, values):
                match = next((a for a in allowed if a.lower() == value.lower()), None)
                if match is None:
                    raise ValueError(f"{name}: {value!r} is not allowed; use one of: {allowed}")
                picked.append(match)
            out[name] = picked
        return out

    @field_validator("reports")
    @classmethod
    def _reports(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        known = modules()
        for module_id, values in v.items():
            module = known.get(module_id)
            if module is None or not module.summary_element:
                raise ValueError(
                    f"unknown report module {module_id!r}; use one of: {', '.join(known)}"
                )
            summary = module.by_id[module.summary_element]
            allowed = [c.value for c in summary.choices]
            for value in _nonempty(module_id, values):
                if allowed and value not in allowed:
                    raise ValueError(
                        f"{module_id}: category {value!r} is not allowed; use one of: {allowed}"
                    )
                if not allowed and not value.lstrip("-").isdigit():
                    raise ValueError(f"{module_id}: {value!r} is not an integer score")
        return v

    @field_validator("cdes")
    @classmethod
    def _cdes(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        cat = catalog()
        out = {}
        for element_id, values in v.items():
            try:
                element = cat.element(element_id)
            except NotFound as exc:
                raise ValueError(f"unknown CDE {element_id!r}: {exc}") from None
            codes = []
            for value in _nonempty(element_id, values):
                if element.kind == "value_set":
                    try:
                        codes.append(element.value(value).code)
                    except Invalid as exc:
                        raise ValueError(str(exc)) from None
                else:
                    try:
                        float(value)
                    except ValueError:
                        raise ValueError(
                            f"CDE {element_id} is a {element.kind} element: "
                            f"{value!r} is not a number"
                        ) from None
                    codes.append(value)
            out[element_id] = codes
        return out

    @model_validator(mode="after")
    def _ranges(self) -> CohortQuery:
        for lo, hi in (
            ("study_date_from", "study_date_to"),
            ("submitted_from", "submitted_to"),
            ("age_min", "age_max"),
        ):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) is after {hi} ({b})")
        return self

    def to_terms(self) -> list[tuple[str, str]]:
        """``key=value`` pairs that ``from_terms`` reads back into an equal query."""
        terms: list[tuple[str, str]] = []
        for key, attr in LIST_KEYS.items():
            terms += [(key, v) for v in getattr(self, attr)]
        terms += [(k, str(getattr(self, k))) for k in SCALAR_KEYS if getattr(self, k) is not None]
        for prefix, attr in GROUP_KEYS.items():
            for name, values in getattr(self, attr).items():
                terms += [(f"{prefix}.{name}", v) for v in values]
        return terms


def _nonempty(name: str, values: list[str]) -> list[str]:
    cleaned = [v.strip() for v in values if v.strip()]
    if not cleaned:
        raise ValueError(f"{name}: no value given")
    return cleaned


def validate_query(data: dict[str, Any]) -> CohortQuery:
    """A ``CohortQuery`` from plain data, or ``Invalid`` (422) naming each broken criterion."""
    try:
        return CohortQuery.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or "query", "message": e["msg"]}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise Invalid(f"Cohort query not valid: {summary}.", details=details) from None


def from_terms(terms: Iterable[tuple[str, str]], ignore: Iterable[str] = ()) -> CohortQuery:
    """Query-string / form / CLI terms (``site=HOSPA``, ``clinical.sex=Female``, ...)."""
    skip = set(ignore)
    data: dict[str, Any] = {}
    for key, value in terms:
        if key in skip or value == "":
            continue
        prefix, dot, name = key.partition(".")
        if key in LIST_KEYS:
            data.setdefault(LIST_KEYS[key], []).append(value)
        elif key in SCALAR_KEYS:
            if key in data:
                raise Invalid(f"Cohort query not valid: {key} is given twice.")
            data[key] = value
        elif dot and prefix in GROUP_KEYS and name:
            data.setdefault(GROUP_KEYS[prefix], {}).setdefault(name, []).append(value)
        else:
            allowed = [*LIST_KEYS, *SCALAR_KEYS, *(f"{p}.NAME" for p in GROUP_KEYS)]
            raise Invalid(
                f"Cohort query not valid: unknown criterion {key!r}; use one of: "
                f"{', '.join(allowed)}.",
                details=[{"field": key, "message": "unknown criterion"}],
            )
    return validate_query(data)


def parse_terms(texts: Iterable[str]) -> CohortQuery:
    """CLI form: each text is ``key=value`` (``--where site=HOSPA``)."""
    pairs = []
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep:
            raise Invalid(f"Cohort term {text!r} is not key=value.")
        pairs.append((key.strip(), value.strip()))
    return from_terms(pairs)


@dataclass
class CohortStudy:
    """One study of the cohort, de-identified (pseudonym, shifted dates, hub UIDs)."""

    study_pk: int
    study_uid: str
    pseudonym: str
    patient_pk: int
    facility_id: int
    site: str
    study_date: str
    submitted_at: datetime
    modalities: list[str]
    clinical: dict[str, Any]
    labels: list[CaseLabel] = field(default_factory=list)

    @property
    def categories(self) -> dict[str, str]:
        """Report module → summary category of the latest signed version."""
        return {lab.module_id: str(lab.summary_value) for lab in self.labels}


def _site_ids(session: Session, codes: list[str]) -> list[int]:
    found = {f.code: f.id for f in session.scalars(select(Facility))}
    unknown = [c for c in codes if c not in found]
    if unknown:
        raise Invalid(
            f"Cohort query not valid: unknown site {unknown[0]!r}; sites: {', '.join(found)}.",
            details=[{"field": "sites", "message": f"unknown site {unknown[0]!r}"}],
        )
    return [found[c] for c in codes]


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def _label_match(q: CohortQuery, labels: list[CaseLabel]) -> bool:
    for module_id, values in q.reports.items():
        if not any(
            lab.module_id == module_id and str(lab.summary_value) in values for lab in labels
        ):
            return False
    for element_id, codes in q.cdes.items():
        found: list[str] = []
        for lab in labels:
            v = lab.codes.get(element_id)
            found += [str(x) for x in v] if isinstance(v, list) else ([] if v is None else [str(v)])
        if not set(found) & set(codes) and not any(_same_number(f, codes) for f in found):
            return False
    return True


def _same_number(value: str, codes: list[str]) -> bool:
    try:
        return any(float(value) == float(c) for c in codes)
    except ValueError:
        return False


def select_studies(session: Session, q: CohortQuery) -> list[CohortStudy]:
    """THE registry cohort: studies of every facility matching ``q``, ordered by site, date."""
    stmt = (
        select(Study, Patient.pseudonym, ClinicalRecord.data)
        .join(Patient, Study.patient_pk == Patient.id)
        .outerjoin(ClinicalRecord, ClinicalRecord.patient_pk == Patient.id)
        .order_by(Study.facility_id, Study.study_date, Study.id)
    )
    if q.sites:
        stmt = stmt.where(Study.facility_id.in_(_site_ids(session, q.sites)))
    if q.modalities:
        stmt = stmt.where(
            exists().where(and_(Series.study_pk == Study.id, Series.modality.in_(q.modalities)))
        )
    if q.study_date_from:
        stmt = stmt.where(Study.study_date >= q.study_date_from.strftime("%Y%m%d"))
    if q.study_date_to:
        stmt = stmt.where(Study.study_date <= q.study_date_to.strftime("%Y%m%d"))
    if q.submitted_from:
        stmt = stmt.where(Study.created_at >= _day_start(q.submitted_from))
    if q.submitted_to:
        stmt = stmt.where(Study.created_at < _day_start(q.submitted_to + timedelta(days=1)))
    for cond in clinical_conditions(q.clinical, q.age_min, q.age_max):
        stmt = stmt.where(cond)
    dictionary = load_dictionary()
    rows = session.execute(stmt).all()
    by_study: dict[str, list[CaseLabel]] = {}
    for lab in final_labels(session, None):
        by_study.setdefault(lab.study_uid, []).append(lab)
    sites = {f.id: f.code for f in session.scalars(select(Facility))}
    out = []
    for study, pseudonym, data in rows:
        labels = by_study.get(study.study_uid, [])
        if (q.reports or q.cdes) and not _label_match(q, labels):
            continue
        clinical = dictionary.empty_record()
        clinical.update({k: v for k, v in (data or {}).items() if k in clinical})
        out.append(
            CohortStudy(
                study_pk=study.id,
                study_uid=study.study_uid,
                pseudonym=pseudonym,
                patient_pk=study.patient_pk,
                facility_id=study.facility_id,
                site=sites.get(study.facility_id, ""),
                study_date=study.study_date,
                submitted_at=study.created_at,
                modalities=sorted(m for m in study.modalities.split("\\") if m),
                clinical=clinical,
                labels=labels,
            )
        )
    return out
