"""The QIDO-RS indexes (revisions 0002, 0003) exist and are the ones the planner uses."""

from __future__ import annotations

import warnings
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.exc import SAWarning
from sqlalchemy.orm import Session

from pair.accounts.service import create_facility
from pair.core.node import Node
from pair.repository.models import Patient, Study
from pair.repository.query import find_studies, parse_query


def _sql_of(node: Node, params: list[tuple[str, str]], facility_id: int = 1) -> tuple[str, Any]:
    captured: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, _m: bool) -> None:
        captured.append((statement, parameters))

    engine = node.db.engine
    event.listen(engine, "before_cursor_execute", grab)
    try:
        with Session(engine) as s:
            find_studies(s, facility_id, parse_query(params))
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return captured[-1]


def _plan(node: Node, params: list[tuple[str, str]]) -> str:
    statement, parameters = _sql_of(node, params)
    raw = node.db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        return "\n".join(str(row[-1]) for row in cur.fetchall())
    finally:
        raw.close()


def test_query_indexes_exist(node: Node) -> None:
    insp = inspect(node.db.engine)
    with warnings.catch_warnings():  # SQLite cannot reflect the expression index: checked below
        warnings.simplefilter("ignore", SAWarning)
        study = {i["name"]: i["column_names"] for i in insp.get_indexes("study")}
    series = {i["name"]: i["column_names"] for i in insp.get_indexes("series")}
    expected = ["facility_id", "patient_id_value", "study_date"]
    assert study["ix_study_facility_patient_id"] == expected
    assert series["ix_series_study_modality"] == ["study_pk", "modality"]
    sql = {
        "sqlite": "SELECT sql FROM sqlite_master WHERE name = :name",
        "postgresql": "SELECT indexdef FROM pg_indexes WHERE indexname = :name",
    }[node.db.engine.dialect.name]
    with node.db.session() as s:
        row = s.execute(text(sql), {"name": "ix_study_facility_lower_name"}).scalar_one()
        definition = row.lower()
    assert "facility_id" in definition and "lower(" in definition and "patient_name" in definition
    if node.db.engine.dialect.name == "postgresql":
        assert "text_pattern_ops" in definition


def test_patient_id_search_uses_facility_patient_index(sqlite_node: Node) -> None:
    plan = _plan(sqlite_node, [("PatientID", "PSEUDO-1")])
    assert "ix_study_facility_patient_id" in plan, plan


def test_modalities_in_study_uses_study_modality_index(sqlite_node: Node) -> None:
    plan = _plan(sqlite_node, [("StudyDate", "20200101-20200201"), ("ModalitiesInStudy", "CT")])
    assert "ix_series_study_modality (study_pk=? AND modality=?)" in plan, plan


def test_patient_name_prefix_uses_lower_name_index_on_sqlite(sqlite_node: Node) -> None:
    plan = _plan(sqlite_node, [("PatientName", "Bench-00012*")])
    assert "ix_study_facility_lower_name (facility_id=? AND <expr>>? AND <expr><?)" in plan, plan


def test_patient_name_prefix_index_used_on_postgresql(node: Node) -> None:
    if node.db.engine.dialect.name != "postgresql":
        return  # the SQLite plan is checked above; this test's subject is text_pattern_ops
    fac = _studies_named(node, [f"Bench-{i:05d}" for i in range(3000)])
    with node.db.session() as s:
        s.execute(text("ANALYZE study"))
    statement, parameters = _sql_of(node, [("PatientName", "Bench-00012*")], fac)
    raw = node.db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(str(row[0]) for row in cur.fetchall())
    finally:
        raw.close()
    assert "ix_study_facility_lower_name" in plan, plan


NAMES = ["Bench-0001", "BENCH-0002", "bench-0100", "Benchmark^Ann", "Bend^Otto", "bench\U0010ffff"]


def _studies_named(node: Node, names: list[str]) -> int:
    with node.db.session() as s:
        fac = create_facility(s, "Name Search Hospital", "NSH")
        patients = [Patient(facility_id=fac.id, pseudonym=f"NSH-{i}") for i in range(len(names))]
        s.add_all(patients)
        s.flush()
        s.add_all(
            Study(
                facility_id=fac.id,
                patient_pk=patient.id,
                study_uid=f"2.25.9{i}",
                patient_name=name,
                study_date=f"2020{1 + i % 12:02d}{1 + i % 28:02d}",
            )
            for i, (patient, name) in enumerate(zip(patients, names, strict=True))
        )
        return fac.id


def _matching(node: Node, facility_id: int, pattern: str) -> set[str]:
    with Session(node.db.engine) as s:
        return {
            st.patient_name
            for st in find_studies(s, facility_id, parse_query([("PatientName", pattern)]))
        }


def test_patient_name_prefix_matches_case_insensitively(node: Node) -> None:
    fac = _studies_named(node, NAMES)
    assert _matching(node, fac, "bench-*") == {"Bench-0001", "BENCH-0002", "bench-0100"}
    assert _matching(node, fac, "BENCH-000*") == {"Bench-0001", "BENCH-0002"}
    assert _matching(node, fac, "ben*") == set(NAMES)
    assert _matching(node, fac, "bench*") == set(NAMES) - {"Bend^Otto"}
    assert _matching(node, fac, "bench\U0010ffff*") == {"bench\U0010ffff"}
    assert _matching(node, fac, "b?nd*") == {"Bend^Otto"}
    assert _matching(node, fac, "bench_*") == set()  # '_' is literal, not a wildcard
    with node.db.session() as s:
        assert s.execute(text("SELECT count(*) FROM study")).scalar_one() == len(NAMES)
