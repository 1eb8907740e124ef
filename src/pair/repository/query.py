"""QIDO-RS matching on the index (PS3.18 §8.3.4 / PS3.4 C.2.2): the single query path."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from pair.core.errors import BadRequest
from pair.dicom.jsonmodel import parse_attribute
from pair.repository.models import Instance, Series, Study


class Level(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class Match(StrEnum):
    UID = "uid"
    DATE = "date"
    TIME = "time"
    TEXT = "text"
    PN = "pn"
    EXACT = "exact"
    INT = "int"


@dataclass(frozen=True)
class Key:
    keyword: str
    level: Level
    column: InstrumentedAttribute[Any]
    match: Match


_KEYS = [
    Key("StudyInstanceUID", Level.STUDY, Study.study_uid, Match.UID),
    Key("StudyDate", Level.STUDY, Study.study_date, Match.DATE),
    Key("StudyTime", Level.STUDY, Study.study_time, Match.TIME),
    Key("AccessionNumber", Level.STUDY, Study.accession_number, Match.TEXT),
    Key("ReferringPhysicianName", Level.STUDY, Study.referring_physician_name, Match.PN),
    Key("PatientName", Level.STUDY, Study.patient_name, Match.PN),
    Key("PatientID", Level.STUDY, Study.patient_id_value, Match.TEXT),
    Key("PatientBirthDate", Level.STUDY, Study.patient_birth_date, Match.DATE),
    Key("PatientSex", Level.STUDY, Study.patient_sex, Match.EXACT),
    Key("PatientAge", Level.STUDY, Study.patient_age, Match.EXACT),
    Key("StudyID", Level.STUDY, Study.study_id, Match.TEXT),
    Key("StudyDescription", Level.STUDY, Study.study_description, Match.PN),
    Key("Modality", Level.SERIES, Series.modality, Match.EXACT),
    Key("SeriesInstanceUID", Level.SERIES, Series.series_uid, Match.UID),
    Key("SeriesNumber", Level.SERIES, Series.series_number, Match.INT),
    Key("SeriesDescription", Level.SERIES, Series.series_description, Match.PN),
    Key("BodyPartExamined", Level.SERIES, Series.body_part_examined, Match.EXACT),
    Key("Manufacturer", Level.SERIES, Series.manufacturer, Match.PN),
    Key(
        "PerformedProcedureStepStartDate",
        Level.SERIES,
        Series.performed_procedure_step_start_date,
        Match.DATE,
    ),
    Key(
        "PerformedProcedureStepStartTime",
        Level.SERIES,
        Series.performed_procedure_step_start_time,
        Match.TIME,
    ),
    Key("SOPClassUID", Level.INSTANCE, Instance.sop_class_uid, Match.UID),
    Key("SOPInstanceUID", Level.INSTANCE, Instance.sop_instance_uid, Match.UID),
    Key("InstanceNumber", Level.INSTANCE, Instance.instance_number, Match.INT),
]
KEYS = {parse_attribute(k.keyword): k for k in _KEYS}
MODALITIES_IN_STUDY = parse_attribute("ModalitiesInStudy")
# Series-level keys of PS3.18 Table 10.6.1-5 inside Request Attributes Sequence. The Basic
# Profile removes both IDs (X), so no stored instance has them: universal matching (empty or
# "*") matches every series, any other value none.
REMOVED_SEQUENCE_KEYS = {
    (0x00400275, 0x00400009),  # > ScheduledProcedureStepID
    (0x00400275, 0x00401001),  # > RequestedProcedureID
}
_RESERVED = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}
_DATE_RE = re.compile(r"^\d{8}$")
MAX_LIMIT = 10000
_Row = TypeVar("_Row")


@dataclass
class QidoQuery:
    matches: dict[int, str] = field(default_factory=dict)
    modalities_in_study: list[str] = field(default_factory=list)
    include: set[int] = field(default_factory=set)
    include_all: bool = False
    limit: int = 1000
    offset: int = 0
    fuzzy: bool = False
    ignored: list[str] = field(default_factory=list)
    removed_match: bool = False  # a value for a key that de-identification always removes
    capped: bool = True  # the limit is the server's (default or maximum), not the client's
    more: bool = False  # set by the find functions: matches beyond a server-capped page remain

    @property
    def requested(self) -> set[int]:
        return set(self.matches) | self.include


def parse_query(params: Sequence[tuple[str, str]]) -> QidoQuery:
    """Parse QIDO-RS query parameters; unknown keywords give a precise 400."""
    q = QidoQuery()
    for name, raw in params:
        if name == "limit":
            q.limit = _nonneg(name, raw, maximum=MAX_LIMIT)
            q.capped = _nonneg(name, raw) > MAX_LIMIT
        elif name == "offset":
            q.offset = _nonneg(name, raw)
        elif name == "fuzzymatching":
            if raw not in ("true", "false"):
                raise BadRequest("fuzzymatching must be 'true' or 'false'.")
            q.fuzzy = raw == "true"
        elif name == "includefield":
            for item in filter(None, (p.strip() for p in raw.split(","))):
                if item == "all":
                    q.include_all = True
                else:
                    q.include.add(_attr(item))
        elif name == "orderby":
            q.ignored.append("orderby")
        elif _sequence_key(name) in REMOVED_SEQUENCE_KEYS:
            q.removed_match = q.removed_match or raw.strip("*") != ""
        else:
            tag = _attr(name)
            if tag == MODALITIES_IN_STUDY:
                q.modalities_in_study.extend(v for v in re.split(r"[\\,]", raw) if v)
                q.include.add(tag)
            elif tag in KEYS:
                q.matches[tag] = raw
            else:
                q.ignored.append(name)
                q.include.add(tag)
    return q


def _sequence_key(name: str) -> tuple[int, ...] | None:
    """``RequestAttributesSequence.RequestedProcedureID`` (or by tags) as a tuple of tags."""
    if "." not in name:
        return None
    try:
        return tuple(parse_attribute(part) for part in name.split("."))
    except BadRequest:
        return None


def _attr(name: str) -> int:
    if "." in name:
        raise BadRequest(f"Sequence matching ({name!r}) is not supported.")
    return parse_attribute(name)


def _nonneg(name: str, raw: str, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a non-negative integer, got {raw!r}.") from None
    if value < 0:
        raise BadRequest(f"{name} must be a non-negative integer, got {raw!r}.")
    return min(value, maximum) if maximum else value


class PnPrefix(ColumnElement[bool]):
    """``lower(col) LIKE 'stem%'`` that SQLite can answer from an expression index.

    SQLite's LIKE optimisation does not apply to ``lower(col)``, so on SQLite the prefix is
    also given as the range ``stem <= lower(col) < next(stem)`` (exact under SQLite's binary
    collation). PostgreSQL gets the LIKE alone: a range is not a prefix under locale collations,
    and its ``text_pattern_ops`` index answers the LIKE directly.
    """

    inherit_cache = True
    _traverse_internals = [
        ("pattern_match", InternalTraversal.dp_clauseelement),
        ("in_range", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, like: ColumnElement[bool], folded: ColumnElement[Any], stem: str) -> None:
        self.pattern_match = like
        upper = stem[:-1] + chr(ord(stem[-1]) + 1) if ord(stem[-1]) < 0x10FFFF else None
        lower_bound = folded >= stem
        self.in_range = lower_bound if upper is None else and_(lower_bound, folded < upper)


@compiles(PnPrefix)
def _pn_prefix_default(element: PnPrefix, compiler: SQLCompiler, **kw: Any) -> str:
    return "(" + compiler.process(element.pattern_match, **kw) + ")"


@compiles(PnPrefix, "sqlite")
def _pn_prefix_sqlite(element: PnPrefix, compiler: SQLCompiler, **kw: Any) -> str:
    return "(" + compiler.process(and_(element.pattern_match, element.in_range), **kw) + ")"


class CaseSensitiveLike(ColumnElement[bool]):
    """DICOM wildcard matching that is case-sensitive on every backend (PS3.4 C.2.2.2.4).

    PostgreSQL's LIKE is case-sensitive; SQLite's is not (for ASCII), so on SQLite the pattern
    is given to GLOB instead, whose ``*`` and ``?`` are DICOM's and which is case-sensitive.
    """

    inherit_cache = True
    _traverse_internals = [
        ("pattern_match", InternalTraversal.dp_clauseelement),
        ("glob_match", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: Any, raw: str) -> None:
        self.pattern_match = column.like(_like(raw), escape="\\")
        glob = "".join("[[]" if c == "[" else "[]]" if c == "]" else c for c in raw)
        self.glob_match = column.op("GLOB")(glob)


@compiles(CaseSensitiveLike)
def _cs_like_default(element: CaseSensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    return "(" + compiler.process(element.pattern_match, **kw) + ")"


@compiles(CaseSensitiveLike, "sqlite")
def _cs_like_sqlite(element: CaseSensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    return "(" + compiler.process(element.glob_match, **kw) + ")"


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _range(column: Any, raw: str, kind: Match) -> Any:
    if "-" not in raw:
        if kind is Match.DATE and not _DATE_RE.match(raw):
            raise BadRequest(f"Date {raw!r} must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD.")
        return column.startswith(raw) if kind is Match.TIME else column == raw
    lo, _, hi = raw.partition("-")
    for part in (lo, hi):
        if kind is Match.DATE and part and not _DATE_RE.match(part):
            raise BadRequest(f"Date range {raw!r} must use YYYYMMDD on each side.")
    conds = [column != ""]
    if lo:
        conds.append(column >= lo)
    if hi:
        conds.append(column <= (hi if kind is Match.DATE else hi + "\uffff"))
    return and_(*conds)


def condition(key: Key, raw: str) -> Any:
    col = key.column
    if raw == "":
        return None  # universal matching
    if key.match is Match.UID:
        uids = [u for u in re.split(r"[\\,]", raw) if u]
        return col.in_(uids)
    if key.match in (Match.DATE, Match.TIME):
        return _range(col, raw, key.match)
    if key.match is Match.INT:
        try:
            return col == int(raw)
        except ValueError:
            raise BadRequest(f"{key.keyword} must be an integer, got {raw!r}.") from None
    if "*" in raw or "?" in raw:
        pattern = _like(raw)
        if key.match is Match.PN:
            folded = func.lower(col)
            like = folded.like(pattern.lower(), escape="\\")
            stem = raw[:-1].lower()
            if raw.endswith("*") and stem and not any(c in stem for c in "*?"):
                return PnPrefix(like, folded, stem)
            return like
        return CaseSensitiveLike(col, raw)
    if key.match is Match.PN:
        return func.lower(col) == raw.lower()
    return col == raw


def _apply(stmt: Select[Any], q: QidoQuery, levels: set[Level]) -> Select[Any]:
    if q.removed_match:
        stmt = stmt.where(false())
    for tag, raw in q.matches.items():
        key = KEYS[tag]
        if key.level not in levels:
            raise BadRequest(f"{key.keyword} is not a matching key at this query level.")
        cond = condition(key, raw)
        if cond is not None:
            stmt = stmt.where(cond)
    if q.modalities_in_study:
        if Level.STUDY not in levels:
            raise BadRequest("ModalitiesInStudy is only a study-level matching key.")
        stmt = stmt.where(
            exists().where(
                and_(Series.study_pk == Study.id, Series.modality.in_(q.modalities_in_study))
            )
        )
    return stmt


def find_studies(session: Session, facility_id: int, q: QidoQuery) -> list[Study]:
    levels = {Level.STUDY}
    stmt = select(Study).where(Study.facility_id == facility_id)
    series_keys = [t for t in q.matches if KEYS[t].level is Level.SERIES]
    if series_keys:  # relational match on series attributes, answered at study level
        sub = select(Series.study_pk)
        for t in series_keys:
            cond = condition(KEYS[t], q.matches[t])
            if cond is not None:
                sub = sub.where(cond)
        stmt = stmt.where(Study.id.in_(sub))
    stmt = _apply(stmt, _without(q, series_keys), levels)
    stmt = stmt.order_by(Study.study_date.desc(), Study.id.desc())
    return _page(q, list(session.scalars(_window(stmt, q))))


def find_series(
    session: Session, facility_id: int, q: QidoQuery, study_uid: str | None = None
) -> list[tuple[Series, Study]]:
    stmt: Any = (
        select(Series, Study)
        .join(Study, Series.study_pk == Study.id)
        .where(Study.facility_id == facility_id)
    )
    if study_uid is not None:
        stmt = stmt.where(Study.study_uid == study_uid)
    stmt = _apply(stmt, q, {Level.STUDY, Level.SERIES})
    stmt = stmt.order_by(Study.id, Series.series_number, Series.id)
    return _page(q, [(row[0], row[1]) for row in session.execute(_window(stmt, q))])


def find_instances(
    session: Session,
    facility_id: int,
    q: QidoQuery,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> list[tuple[Instance, Series, Study]]:
    stmt: Any = (
        select(Instance, Series, Study)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .where(Study.facility_id == facility_id)
    )
    if study_uid is not None:
        stmt = stmt.where(Study.study_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(Series.series_uid == series_uid)
    stmt = _apply(stmt, q, {Level.STUDY, Level.SERIES, Level.INSTANCE})
    stmt = stmt.order_by(Series.id, Instance.instance_number, Instance.id)
    return _page(q, [(row[0], row[1], row[2]) for row in session.execute(_window(stmt, q))])


def _window(stmt: Any, q: QidoQuery) -> Any:
    """One row beyond the page, to tell whether more matches remain."""
    return stmt.limit(q.limit + 1).offset(q.offset)


def _page(q: QidoQuery, rows: list[_Row]) -> list[_Row]:
    q.more = len(rows) > q.limit
    return rows[: q.limit]


def _without(q: QidoQuery, tags: Sequence[int]) -> QidoQuery:
    if not tags:
        return q
    copy = QidoQuery(
        **{**q.__dict__, "matches": {t: v for t, v in q.matches.items() if t not in tags}}
    )
    return copy


def instances_for(
    session: Session,
    facility_id: int,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[Instance]:
    """Instances to retrieve (WADO-RS), facility-scoped, in a stable order."""
    stmt = (
        select(Instance)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .where(Study.facility_id == facility_id, Study.study_uid == study_uid)
    )
    if series_uid is not None:
        stmt = stmt.where(Series.series_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    stmt = stmt.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    return list(session.scalars(stmt))


def query_pairs(mapping: Mapping[str, str] | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(mapping, Mapping):
        return list(mapping.items())
    return list(mapping)
