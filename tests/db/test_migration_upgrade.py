"""Databases created at earlier revisions upgrade to today's heads, on SQLite and PostgreSQL.

Each earlier state is built by running the migrations up to one revision of the script directory
(so a new revision of any capability branch is covered without editing this file), plus the
historical version tables of renamed revisions (``revision_aliases.RENAMED_REVISIONS``). One row
is written into every table of the old schema; after ``upgrade heads`` the schema must equal a
fresh database's and every row must still be there with its old values.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from pair.db.migrate import MIGRATIONS_DIR, alembic_config
from pair.db.revision_aliases import RENAMED_REVISIONS
from pair.db.session import make_engine
from pair.db.throwaway import PostgresServer

SCRIPT = ScriptDirectory.from_config(alembic_config("sqlite://"))
REVISIONS = sorted(rev.revision for rev in SCRIPT.walk_revisions())


def _previous_release() -> tuple[str, ...]:
    """Every branch one revision behind its head (a branch of one revision absent)."""
    targets: list[str] = []
    for head in SCRIPT.get_heads():
        down = SCRIPT.get_revision(head).down_revision
        targets.extend([down] if isinstance(down, str) else down or ())
    return tuple(sorted(targets))


# each state: the revisions to upgrade to, one after the other
STATES: dict[str, tuple[str, ...]] = {rev: (rev,) for rev in REVISIONS}
if _previous_release():
    STATES["every branch one behind its head"] = _previous_release()

# The version table as written before a rename: (revisions to build, {today's id: old id},
# extra ids listed). qido_0001 (own branch, depending on core 0003) was the core branch's head;
# Alembic listed it instead of 0003. These are facts about released databases and never change.
LEGACY_STATES: dict[str, tuple[tuple[str, ...], dict[str, str], tuple[str, ...]]] = {
    "qido_0001": (
        (
            "0004_instance_bits_allocated",
            "algorithms_0001",
            "clinical_0001",
            "evalruns_0002",
            "reporting_0002",
        ),
        {"0004_instance_bits_allocated": "qido_0001"},
        (),
    ),
    # the same, with the core revision the renamed one depends on also listed
    "qido_0001+0003": (
        ("0004_instance_bits_allocated",),
        {"0004_instance_bits_allocated": "qido_0001"},
        ("0003_patient_name_index",),
    ),
}

_fresh_schemas: dict[str, dict[str, Any]] = {}


def _schema(engine: sa.Engine) -> dict[str, Any]:
    """Tables, columns (type, nullable, default), keys and indexes, in a comparable form."""
    insp = sa.inspect(engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLite cannot reflect expression indexes
        out: dict[str, Any] = {}
        for table in sorted(insp.get_table_names()):
            columns = {
                c["name"]: (str(c["type"]), c["nullable"], str(c.get("default")))
                for c in insp.get_columns(table)
            }
            indexes = sorted(
                (
                    str(ix["name"]),
                    tuple(str(c) for c in ix["column_names"]),
                    bool(ix["unique"]),
                    tuple(str(e) for e in ix.get("expressions") or ()),
                )
                for ix in insp.get_indexes(table)
            )
            fks = sorted(
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                )
                for fk in insp.get_foreign_keys(table)
            )
            uniques = sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table))
            pk = tuple(insp.get_pk_constraint(table)["constrained_columns"])
            out[table] = {
                "columns": columns,
                "indexes": indexes,
                "fks": fks,
                "uniques": uniques,
                "pk": pk,
            }
    with engine.connect() as conn:
        out["alembic_version rows"] = sorted(
            conn.scalars(sa.text("SELECT version_num FROM alembic_version"))
        )
        if engine.dialect.name == "sqlite":  # expression indexes, which the inspector skips
            out["sqlite indexes"] = sorted(
                tuple(r)
                for r in conn.execute(
                    sa.text("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'")
                )
            )
    return out


def _reflect(engine: sa.Engine) -> sa.MetaData:
    meta = sa.MetaData()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLite cannot reflect expression indexes
        meta.reflect(bind=engine)
    return meta


def _value(column: sa.Column[Any], tz_aware: bool) -> Any:
    """A valid value of the column's type (short enough for any declared length)."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = str
    if python_type is bool:
        return True
    if python_type is int:
        return 7
    if python_type is float:
        return 1.5
    if python_type is dt.datetime:
        return dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC if tz_aware else None)
    if python_type is dt.date:
        return dt.date(2026, 1, 2)
    if python_type is dict:
        return {"kept": "yes"}
    if python_type is list:
        return ["kept"]
    if python_type is bytes:
        return b"kept"
    return "k"


def _fill_every_table(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """One row per table (parents first, foreign keys pointing at the parent's row); returns
    each row as the database reads it back."""
    meta = _reflect(engine)
    written: dict[str, dict[str, Any]] = {}
    with engine.begin() as conn:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            row: dict[str, Any] = {}
            for column in table.columns:
                fk = next(iter(column.foreign_keys), None)
                if fk is not None:
                    parent = written.get(fk.column.table.name)
                    row[column.name] = None if parent is None else parent[fk.column.name]
                else:
                    row[column.name] = _value(column, getattr(column.type, "timezone", False))
            conn.execute(table.insert().values(**row))
            pk = [table.c[c.name] == row[c.name] for c in table.primary_key.columns]
            written[table.name] = dict(conn.execute(sa.select(table).where(*pk)).mappings().one())
    return written


def _assert_rows_survived(engine: sa.Engine, rows: dict[str, dict[str, Any]]) -> None:
    meta = _reflect(engine)
    lost = []
    with engine.connect() as conn:
        for name, old in rows.items():
            table = meta.tables[name]
            pk = [table.c[c.name] == old[c.name] for c in table.primary_key.columns]
            now = conn.execute(sa.select(table).where(*pk)).mappings().one_or_none()
            if now is None or {k: now[k] for k in old} != old:
                lost.append((name, old, now and dict(now)))
    assert lost == [], f"rows lost or changed by the upgrade: {lost}"


def _other_database(url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


def _fresh_schema(url: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    dialect = sa.make_url(url).get_backend_name()
    if dialect not in _fresh_schemas:
        fresh_url = _other_database(url, tmp_path, request)
        command.upgrade(alembic_config(fresh_url), "heads")
        engine = make_engine(fresh_url, poolclass=sa.pool.NullPool)
        _fresh_schemas[dialect] = _schema(engine)
        engine.dispose()
    return _fresh_schemas[dialect]


def _upgrade_and_compare(
    url: str, rows: dict[str, dict[str, Any]], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    command.upgrade(alembic_config(url), "heads")
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        assert _schema(engine) == _fresh_schema(url, tmp_path, request)
        _assert_rows_survived(engine, rows)
    finally:
        engine.dispose()


def test_every_revision_is_covered() -> None:
    """The script directory is read, not a list: each revision file is a state tested."""
    files = [p for p in (MIGRATIONS_DIR / "versions").glob("*.py") if p.stem != "__init__"]
    assert len(files) == len(REVISIONS) >= 10
    assert set(SCRIPT.get_heads()) <= set(STATES)
    assert set(RENAMED_REVISIONS) == set(LEGACY_STATES) - {"qido_0001+0003"}


@pytest.mark.parametrize("state", sorted(STATES))
def test_database_at_an_earlier_revision_upgrades_to_heads(
    state: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cfg = alembic_config(database_url)
    for target in STATES[state]:
        command.upgrade(cfg, target)
    engine = make_engine(database_url, poolclass=sa.pool.NullPool)
    rows = _fill_every_table(engine)
    engine.dispose()
    assert rows, "the old schema has tables to fill"
    _upgrade_and_compare(database_url, rows, tmp_path, request)


@pytest.mark.parametrize("legacy", sorted(LEGACY_STATES))
def test_database_stamped_with_a_renamed_revision_upgrades(
    legacy: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    targets, rewrite, extra = LEGACY_STATES[legacy]
    assert set(rewrite.values()) & RENAMED_REVISIONS.keys(), "an old id from the alias table"
    cfg = alembic_config(database_url)
    for target in targets:
        command.upgrade(cfg, target)
    engine = make_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for today, old in rewrite.items():
            conn.execute(
                sa.text("UPDATE alembic_version SET version_num = :old WHERE version_num = :new"),
                {"old": old, "new": today},
            )
        for old in extra:
            conn.execute(sa.text("INSERT INTO alembic_version VALUES (:old)"), {"old": old})
        stamped = set(conn.scalars(sa.text("SELECT version_num FROM alembic_version")))
    assert stamped & RENAMED_REVISIONS.keys()
    rows = _fill_every_table(engine)
    engine.dispose()
    _upgrade_and_compare(database_url, rows, tmp_path, request)
