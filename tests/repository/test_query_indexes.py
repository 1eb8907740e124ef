"""The QIDO-RS indexes of revision 0002_query_indexes exist and are the ones the planner uses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from pair.core.node import Node
from pair.repository.query import find_studies, parse_query


def _sql_of(node: Node, params: list[tuple[str, str]]) -> tuple[str, Any]:
    captured: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, _m: bool) -> None:
        captured.append((statement, parameters))

    engine = node.db.engine
    event.listen(engine, "before_cursor_execute", grab)
    try:
        with Session(engine) as s:
            find_studies(s, 1, parse_query(params))
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
    study = {i["name"]: i["column_names"] for i in insp.get_indexes("study")}
    series = {i["name"]: i["column_names"] for i in insp.get_indexes("series")}
    expected = ["facility_id", "patient_id_value", "study_date"]
    assert study["ix_study_facility_patient_id"] == expected
    assert series["ix_series_study_modality"] == ["study_pk", "modality"]


def test_patient_id_search_uses_facility_patient_index(sqlite_node: Node) -> None:
    plan = _plan(sqlite_node, [("PatientID", "PSEUDO-1")])
    assert "ix_study_facility_patient_id" in plan, plan


def test_modalities_in_study_uses_study_modality_index(sqlite_node: Node) -> None:
    plan = _plan(sqlite_node, [("StudyDate", "20200101-20200201"), ("ModalitiesInStudy", "CT")])
    assert "ix_series_study_modality (study_pk=? AND modality=?)" in plan, plan
