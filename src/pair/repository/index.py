"""Write de-identified instances into the study/series/instance index, a batch at a time.

Ingest extracts an :class:`IndexRecord` (plain values, picklable) from each de-identified
dataset while the dataset is at hand (possibly in a worker process); ``index_records`` then
writes a whole batch with a handful of statements: one lookup per level, inserts only for
what is new, one counter update per series and study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from pair.core import fastpaths
from pair.db.base import Base, utcnow
from pair.db.values import column_int, column_text, joined_values
from pair.deid.rawtext import single_text
from pair.deid.walk import _dict_vr
from pair.repository.models import Instance, Patient, Series, Study


@cache
def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return tag


def _value(ds: Dataset, keyword: str) -> Any:
    # by tag: skips pydicom's keyword lookup (about 20 attributes per instance on every ingest)
    elem = ds.get(_tag(keyword))
    return None if elem is None else elem.value


def _text(ds: Dataset, keyword: str, limit: int = 256) -> str:
    """The index value: NUL dropped and cut to the column (the file keeps the value as sent).

    With the fast paths on, a raw single-valued text element is read from its bytes
    (``rawtext.single_text``: exactly ``str(value)``, or ``None`` and pydicom converts it)."""
    if fastpaths.enabled():
        fast = single_text(ds, _tag(keyword), _dict_vr)
        if fast is not None:
            return column_text(fast, limit)
    value = _value(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or value.__class__.__name__ == "MultiValue":
        return column_text("\\".join(str(v) for v in value), limit)
    return column_text(value, limit)


def _int(ds: Dataset, keyword: str) -> int | None:
    """An int4 index value; an IS value beyond the column's range is not indexed."""
    value = _value(ds, keyword)
    return None if value in (None, "") else column_int(value)


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    storage_path: str
    size: int
    transfer_syntax_uid: str


@dataclass
class IndexRecord:
    """Everything the index needs about one de-identified instance (column name → value)."""

    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any] = field(default_factory=dict)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.instance["sop_instance_uid"])

    @property
    def sha256(self) -> str:
        return str(self.instance["sha256"])

    @classmethod
    def from_dataset(
        cls, ds: Dataset, stored: StoredFile, *, source: str, burned_in_risk: str = ""
    ) -> IndexRecord:
        pseudonym = _text(ds, "PatientID", 64)
        return cls(
            patient={
                "pseudonym": pseudonym,
                "patient_sex": _text(ds, "PatientSex", 16),
                "patient_birth_date": _text(ds, "PatientBirthDate", 8),
            },
            study={
                "study_uid": str(ds.StudyInstanceUID),
                "study_date": _text(ds, "StudyDate", 8),
                "study_time": _text(ds, "StudyTime", 16),
                "accession_number": _text(ds, "AccessionNumber", 64),
                "study_id": _text(ds, "StudyID", 16),
                "study_description": _text(ds, "StudyDescription"),
                "referring_physician_name": _text(ds, "ReferringPhysicianName"),
                "patient_name": _text(ds, "PatientName"),
                "patient_id_value": pseudonym,
                "patient_birth_date": _text(ds, "PatientBirthDate", 8),
                "patient_sex": _text(ds, "PatientSex", 16),
                "patient_age": _text(ds, "PatientAge", 4),
            },
            series={
                "series_uid": str(ds.SeriesInstanceUID),
                "modality": _text(ds, "Modality", 16),
                "series_number": _int(ds, "SeriesNumber"),
                "series_description": _text(ds, "SeriesDescription"),
                "body_part_examined": _text(ds, "BodyPartExamined", 64),
                "manufacturer": _text(ds, "Manufacturer", 128),
                "manufacturer_model_name": _text(ds, "ManufacturerModelName", 128),
                "performed_procedure_step_start_date": _text(
                    ds, "PerformedProcedureStepStartDate", 8
                ),
                "performed_procedure_step_start_time": _text(
                    ds, "PerformedProcedureStepStartTime", 16
                ),
            },
            instance={
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "sop_class_uid": str(ds.SOPClassUID),
                "instance_number": _int(ds, "InstanceNumber"),
                "transfer_syntax_uid": stored.transfer_syntax_uid,
                "rows": _int(ds, "Rows"),
                "columns": _int(ds, "Columns"),
                "number_of_frames": _int(ds, "NumberOfFrames"),
                "bits_allocated": _int(ds, "BitsAllocated"),
                "storage_path": stored.storage_path,
                "sha256": stored.sha256,
                "size": stored.size,
                "source": column_text(source, 128),
                "burned_in_risk": column_text(burned_in_risk, 256),
            },
        )


def find_instance(session: Session, sop_instance_uid: str) -> Instance | None:
    return session.scalar(select(Instance).where(Instance.sop_instance_uid == sop_instance_uid))


def stored_digests(session: Session, sop_instance_uids: Sequence[str]) -> dict[str, str]:
    """SOP Instance UID → SHA-256 of what is already stored, for the given UIDs."""
    if not sop_instance_uids:
        return {}
    rows = session.execute(_STORED_DIGESTS, {"uids": sorted(set(sop_instance_uids))})
    return {uid: sha for uid, sha in rows}


def _patients(session: Session, facility_id: int, records: Sequence[IndexRecord]) -> dict[str, int]:
    wanted = {r.patient["pseudonym"]: r.patient for r in records}
    found = dict(
        session.execute(
            select(Patient.pseudonym, Patient.id).where(Patient.pseudonym.in_(sorted(wanted)))
        ).all()
    )
    for pseudonym in sorted(set(wanted) - set(found)):
        found[pseudonym] = session.execute(
            insert(Patient)
            .values(facility_id=facility_id, **wanted[pseudonym])
            .returning(Patient.id)
        ).scalar_one()
    return found


def _insert_studies(
    session: Session, facility_id: int, records: Sequence[IndexRecord], patients: dict[str, int]
) -> dict[str, tuple[int, str]]:
    """Insert the records' studies (none of them exists); study UID → (id, modalities).

    A concurrent first insert of the same study raises IntegrityError: stage two is retried.
    """
    wanted = {r.study["study_uid"]: r for r in records}
    found: dict[str, tuple[int, str]] = {}
    for uid in sorted(wanted):
        rec = wanted[uid]
        pk = session.execute(
            insert(Study)
            .values(
                facility_id=facility_id,
                patient_pk=patients[rec.patient["pseudonym"]],
                **rec.study,
            )
            .returning(Study.id)
        ).scalar_one()
        found[uid] = (pk, "")
    return found


def _table(model: type[Base]) -> Table:
    """The model's Core table: executemany without the ORM's per-row bookkeeping."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


# prebuilt statements for the per-batch hot path (Core tables: no ORM compilation per call)
_instance_t, _series_t, _study_t = _table(Instance), _table(Series), _table(Study)
_STORED_DIGESTS = select(_instance_t.c.sop_instance_uid, _instance_t.c.sha256).where(
    _instance_t.c.sop_instance_uid.in_(bindparam("uids", expanding=True))
)
# Stage two locks the rows it will update in one global order (studies, then series, each by
# primary key) before writing anything: concurrent batches into the same studies queue on the
# first lock instead of deadlocking. FOR NO KEY UPDATE (PostgreSQL; SQLite has one writer)
# leaves foreign-key checks of other writers' inserts (KEY SHARE) unblocked.
_LOCK_STUDIES = (
    select(_study_t.c.study_uid, _study_t.c.id, _study_t.c.modalities)
    .where(_study_t.c.study_uid.in_(bindparam("uids", expanding=True)))
    .order_by(_study_t.c.id)
    .with_for_update(key_share=True)  # FOR NO KEY UPDATE
)
_LOCK_SERIES = (
    select(_series_t.c.series_uid, _series_t.c.id)
    .where(_series_t.c.series_uid.in_(bindparam("uids", expanding=True)))
    .order_by(_series_t.c.id)
    .with_for_update(key_share=True)
)
_COUNT_SERIES = (
    update(_series_t)
    .where(_series_t.c.id == bindparam("pk"))
    .values(num_instances=_series_t.c.num_instances + bindparam("n"))
)
_COUNT_STUDY = (
    update(_study_t)
    .where(_study_t.c.id == bindparam("pk"))
    .values(num_instances=_study_t.c.num_instances + bindparam("n"), updated_at=bindparam("now"))
)


_MODALITIES_LIMIT: int = getattr(_study_t.c.modalities.type, "length", None) or 128


def index_records(session: Session, facility_id: int, records: Sequence[IndexRecord]) -> None:
    """Index new instances (the caller has excluded those already stored).

    Existing study and series rows are locked first, in one global order (see
    ``_LOCK_STUDIES``), so counters and ModalitiesInStudy are updated without lost updates or
    deadlocks; a concurrent first insert of the same patient/study/series/instance raises
    IntegrityError, which the caller answers by retrying stage two.
    """
    if not records:
        return
    wanted_series = {r.series["series_uid"]: r for r in records}
    wanted_studies = {r.study["study_uid"]: r for r in records}
    studies: dict[str, tuple[int, str]] = {
        uid: (pk, modalities)
        for uid, pk, modalities in session.execute(_LOCK_STUDIES, {"uids": sorted(wanted_studies)})
    }
    series_pk: dict[str, int] = dict(
        session.execute(_LOCK_SERIES, {"uids": sorted(wanted_series)}).tuples().all()
    )
    new_studies = [wanted_studies[uid] for uid in sorted(set(wanted_studies) - set(studies))]
    if new_studies:
        patients = _patients(session, facility_id, new_studies)
        studies.update(_insert_studies(session, facility_id, new_studies, patients))
    new_series: dict[str, list[str]] = {}  # study UID → modalities of its new series
    for uid in sorted(set(wanted_series) - set(series_pk)):
        rec = wanted_series[uid]
        study_uid = rec.study["study_uid"]
        series_pk[uid] = session.execute(
            insert(Series).values(study_pk=studies[study_uid][0], **rec.series).returning(Series.id)
        ).scalar_one()
        new_series.setdefault(study_uid, []).append(rec.series["modality"])
    now = utcnow()
    session.execute(
        insert(_table(Instance)),
        [
            {**r.instance, "series_pk": series_pk[r.series["series_uid"]], "received_at": now}
            for r in records
        ],
    )
    per_series: dict[int, int] = {}
    per_study: dict[str, int] = {}
    for r in records:
        pk = series_pk[r.series["series_uid"]]
        per_series[pk] = per_series.get(pk, 0) + 1
        per_study[r.study["study_uid"]] = per_study.get(r.study["study_uid"], 0) + 1
    session.execute(  # Core executemany: one statement for all series of the batch
        _COUNT_SERIES, [{"pk": pk, "n": n} for pk, n in sorted(per_series.items())]
    )
    known_studies = [
        {"pk": studies[uid][0], "n": n, "now": now}
        for uid, n in sorted(per_study.items())
        if uid not in new_series
    ]
    if known_studies:
        session.execute(_COUNT_STUDY, known_studies)
    for study_uid, added in sorted(new_series.items()):
        pk, modalities = studies[study_uid]
        values: dict[str, Any] = {
            "num_instances": Study.num_instances + per_study[study_uid],
            "num_series": Study.num_series + len(added),
            "updated_at": now,
        }
        known = set(filter(None, modalities.split("\\")))
        merged = known | set(filter(None, added))
        if merged != known:
            # whole values that fit the column (PostgreSQL refuses a longer string)
            values["modalities"] = joined_values(sorted(merged), _MODALITIES_LIMIT)
        session.execute(
            update(Study)
            .where(Study.id == pk)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def index_instance(
    session: Session,
    facility_id: int,
    ds: Dataset,
    stored: StoredFile,
    *,
    source: str,
    burned_in_risk: str = "",
) -> Instance:
    """Index one new instance (objects PAIR derives itself, released quarantine items)."""
    record = IndexRecord.from_dataset(ds, stored, source=source, burned_in_risk=burned_in_risk)
    index_records(session, facility_id, [record])
    instance = find_instance(session, record.sop_instance_uid)
    assert instance is not None
    return instance
