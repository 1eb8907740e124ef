"""Cases (pseudonymous patient + clinical record): access checks, clinical read/write and the
one reusable cohort search used by the portal, the API, evaluation, training and the registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility, Role
from pair.audit.service import Actor, record, record_change
from pair.clinical.dictionary import FieldError, Value, load_dictionary
from pair.clinical.models import ClinicalRecord
from pair.core.errors import Forbidden, Invalid
from pair.repository.cases import facility_scope, get_case
from pair.repository.models import Patient, Series, Study

SORT_KEYS = ("pseudonym", "first_study", "last_study", "studies", "age", "sex", "covid")
WRITE_ROLES = frozenset({Role.ADMIN.value, Role.DATA_MANAGER.value})


def clinical_of(session: Session, patient: Patient) -> dict[str, Value]:
    row = session.scalar(select(ClinicalRecord).where(ClinicalRecord.patient_pk == patient.id))
    data = load_dictionary().empty_record()
    if row is not None:
        data.update({k: v for k, v in row.data.items() if k in data})
    return data


def read_clinical(session: Session, actor: Actor, case_id: int) -> dict[str, Value]:
    patient = get_case(session, actor, case_id)
    record(session, actor, "clinical.read", "case", str(patient.id))
    return clinical_of(session, patient)


def store_clinical(
    session: Session, actor: Actor, patient: Patient, data: dict[str, Value]
) -> list[str]:
    """Write an already validated record; returns the names of the fields that changed."""
    row = session.scalar(select(ClinicalRecord).where(ClinicalRecord.patient_pk == patient.id))
    dictionary = load_dictionary()
    before = clinical_of(session, patient)
    changed = [name for name in dictionary.names if before.get(name) != data.get(name)]
    if row is None:
        row = ClinicalRecord(
            patient_pk=patient.id,
            facility_id=patient.facility_id,
            data={},
            dictionary_version=dictionary.version,
        )
        session.add(row)
    row.data = {k: v for k, v in data.items() if v is not None}
    row.dictionary_version = dictionary.version
    row.updated_at = datetime.now(UTC)
    row.updated_by = actor.user_name
    session.flush()
    record(
        session,
        actor,
        "clinical.write",
        "case",
        str(patient.id),
        detail={"fields": changed, "dictionary_version": dictionary.version},
    )
    if changed:
        record_change(session, patient.facility_id, "clinical.update", "case", patient.pseudonym)
    return changed


def write_clinical(
    session: Session, actor: Actor, case_id: int, raw: dict[str, Any]
) -> dict[str, Value]:
    """Replace a case's clinical record; any broken rule rejects the whole write (422)."""
    if actor.role not in WRITE_ROLES:
        raise Forbidden("Only data managers and admins can change clinical data.")
    patient = get_case(session, actor, case_id)
    data, errors = load_dictionary().validate(raw)
    if errors:
        raise_invalid(errors)
    store_clinical(session, actor, patient, data)
    return data


def raise_invalid(errors: list[FieldError]) -> None:
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
    raise Invalid(f"Clinical data not saved: {summary}.", details=[e.to_dict() for e in errors])


# ---- cohort / case search ---------------------------------------------------------------


@dataclass
class CaseQuery:
    """Cohort criteria. Study dates are the de-identified (shifted) dates, YYYYMMDD."""

    study_date_from: str | None = None
    study_date_to: str | None = None
    modality: str | None = None
    covid19_positive: str | None = None
    sex: str | None = None
    age_band: str | None = None
    age_min: int | None = None
    age_max: int | None = None  # exclusive
    facility_id: int | None = None  # narrows an admin's node-wide scope
    text: str | None = None
    sort: str = "pseudonym"
    order: Literal["asc", "desc"] = "asc"
    limit: int = 25
    offset: int = 0


@dataclass
class CaseRow:
    id: int
    pseudonym: str
    facility_id: int
    facility: str
    studies: int
    modalities: list[str]
    first_study: str
    last_study: str
    descriptions: list[str]
    clinical: dict[str, Value] = field(default_factory=dict)


@dataclass
class CaseResult:
    total: int
    items: list[CaseRow]


def _clinical_value(name: str) -> ColumnElement[Any]:
    return ClinicalRecord.data[name].as_string()


def clinical_conditions(
    values: Mapping[str, Sequence[str]], age_min: int | None = None, age_max: int | None = None
) -> list[ColumnElement[bool]]:
    """Conditions on ``ClinicalRecord`` (joined by the caller) shared by every cohort query:
    each field takes one of its listed values (already checked against the dictionary);
    ``age_max`` is exclusive. Used by the case search and the registry's ``CohortQuery``."""
    dictionary = load_dictionary()
    conds: list[ColumnElement[bool]] = []
    for name, wanted in values.items():
        f = dictionary.get(name)
        if f is not None and f.type == "boolean":
            flags = [v.lower() == "true" for v in wanted]
            conds.append(ClinicalRecord.data[name].as_boolean().in_(flags))
        else:
            conds.append(_clinical_value(name).in_(list(wanted)))
    age = ClinicalRecord.data["age_at_index"].as_integer()
    if age_min is not None:
        conds.append(age >= age_min)
    if age_max is not None:
        conds.append(age < age_max)
    return conds


def _search_date(value: str, label: str) -> str:
    """A search date as DICOM DA (YYYYMMDD); a date that does not exist is refused, not
    silently matched as text (``2020-13-45`` used to find nothing without saying why)."""
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d").strftime("%Y%m%d")
    except ValueError:
        try:
            return datetime.strptime(value.strip(), "%Y%m%d").strftime("%Y%m%d")
        except ValueError:
            raise Invalid(
                f"{label} {value!r} is not a date; use YYYY-MM-DD, e.g. 2020-03-15."
            ) from None


def _study_filter(q: CaseQuery) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if q.study_date_from:
        conds.append(Study.study_date >= _search_date(q.study_date_from, "Study date from"))
    if q.study_date_to:
        conds.append(Study.study_date <= _search_date(q.study_date_to, "Study date to"))
    if q.modality:
        conds.append(
            exists().where(Series.study_pk == Study.id, Series.modality == q.modality.upper())
        )
    return conds


def _filtered(q: CaseQuery, scope: int | None) -> Select[Any]:
    dictionary = load_dictionary()
    stmt = select(Patient.id).outerjoin(ClinicalRecord, ClinicalRecord.patient_pk == Patient.id)
    if scope is not None:
        stmt = stmt.where(Patient.facility_id == scope)
    if q.facility_id is not None:
        stmt = stmt.where(Patient.facility_id == q.facility_id)
    study_conds = _study_filter(q)
    if study_conds:
        stmt = stmt.where(exists().where(Study.patient_pk == Patient.id, and_(*study_conds)))
    values: dict[str, list[str]] = {}
    for name in ("covid19_positive", "sex"):
        value = getattr(q, name)
        if value:
            f = dictionary.get(name)
            if f is None or value not in f.values:
                allowed = ", ".join(f.values) if f else ""
                raise Invalid(f"Filter {name}={value!r} is not allowed; use one of: {allowed}.")
            values[name] = [value]
    age_min, age_max = q.age_min, q.age_max
    if q.age_band:
        band = dictionary.age_band(q.age_band)
        if band is None:
            bands = ", ".join(b.label for b in dictionary.age_bands)
            raise Invalid(f"Unknown age band {q.age_band!r}; use one of: {bands}.")
        age_min, age_max = band.min, band.max
    for cond in clinical_conditions(values, age_min, age_max):
        stmt = stmt.where(cond)
    if q.text:
        like = f"%{q.text.strip().lower()}%"
        stmt = stmt.where(
            or_(
                func.lower(Patient.pseudonym).like(like),
                exists().where(
                    Study.patient_pk == Patient.id,
                    or_(
                        func.lower(Study.study_description).like(like),
                        exists().where(
                            Series.study_pk == Study.id,
                            func.lower(Series.series_description).like(like),
                        ),
                    ),
                ),
            )
        )
    return stmt


def search_cases(session: Session, facility_id: int | None, q: CaseQuery) -> CaseResult:
    """THE cohort query: cases of ``facility_id`` (None = every facility) matching ``q``."""
    if q.sort not in SORT_KEYS:
        raise Invalid(f"Cannot sort by {q.sort!r}; use one of: {', '.join(SORT_KEYS)}.")
    if not 1 <= q.limit <= 1000 or q.offset < 0:
        raise Invalid("limit must be 1-1000 and offset ≥ 0.")
    base = _filtered(q, facility_id)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    first = (
        select(func.min(Study.study_date))
        .where(Study.patient_pk == Patient.id)
        .correlate(Patient)
        .scalar_subquery()
    )
    last = (
        select(func.max(Study.study_date))
        .where(Study.patient_pk == Patient.id)
        .correlate(Patient)
        .scalar_subquery()
    )
    n_studies = (
        select(func.count(Study.id))
        .where(Study.patient_pk == Patient.id)
        .correlate(Patient)
        .scalar_subquery()
    )
    keys: dict[str, Any] = {
        "pseudonym": Patient.pseudonym,
        "first_study": first,
        "last_study": last,
        "studies": n_studies,
        "age": ClinicalRecord.data["age_at_index"].as_integer(),
        "sex": _clinical_value("sex"),
        "covid": _clinical_value("covid19_positive"),
    }
    key = keys[q.sort]
    ordering = key.desc() if q.order == "desc" else key.asc()
    if q.sort != "pseudonym":
        ordering = ordering.nulls_last()
    page = base.add_columns(first, last, n_studies).order_by(ordering, Patient.id)
    rows = session.execute(page.limit(q.limit).offset(q.offset)).all()
    return CaseResult(total=total, items=_rows(session, [r[0] for r in rows]))


def _rows(session: Session, ids: list[int]) -> list[CaseRow]:
    if not ids:
        return []
    patients = {p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(ids)))}
    facilities = {f.id: f.name for f in session.scalars(select(Facility))}
    clinical = {
        c.patient_pk: c.data
        for c in session.scalars(select(ClinicalRecord).where(ClinicalRecord.patient_pk.in_(ids)))
    }
    studies: dict[int, list[Study]] = {i: [] for i in ids}
    for s in session.scalars(select(Study).where(Study.patient_pk.in_(ids))):
        studies[s.patient_pk].append(s)
    modalities: dict[int, set[str]] = {i: set() for i in ids}
    for pk, modality in session.execute(
        select(Study.patient_pk, Series.modality)
        .join(Series, Series.study_pk == Study.id)
        .where(Study.patient_pk.in_(ids))
        .distinct()
    ):
        if modality:
            modalities[pk].add(modality)
    out = []
    for i in ids:
        p = patients[i]
        dates = sorted(s.study_date for s in studies[i] if s.study_date)
        empty = load_dictionary().empty_record()
        empty.update(clinical.get(i, {}))
        out.append(
            CaseRow(
                id=p.id,
                pseudonym=p.pseudonym,
                facility_id=p.facility_id,
                facility=facilities.get(p.facility_id, ""),
                studies=len(studies[i]),
                modalities=sorted(modalities[i]),
                first_study=dates[0] if dates else "",
                last_study=dates[-1] if dates else "",
                descriptions=sorted(
                    {s.study_description for s in studies[i] if s.study_description}
                ),
                clinical=empty,
            )
        )
    return out


def list_cases(session: Session, actor: Actor, q: CaseQuery) -> CaseResult:
    """``search_cases`` in the actor's scope, audited (no filter values: they may be PHI-ish)."""
    result = search_cases(session, facility_scope(actor), q)
    record(session, actor, "case.search", "case", "", detail={"total": result.total})
    return result


def case_studies(session: Session, patient: Patient) -> list[Study]:
    return list(
        session.scalars(
            select(Study).where(Study.patient_pk == patient.id).order_by(Study.study_date, Study.id)
        )
    )


def study_series(session: Session, study: Study) -> list[Series]:
    return list(
        session.scalars(
            select(Series)
            .where(Series.study_pk == study.id)
            .order_by(Series.series_number, Series.id)
        )
    )
