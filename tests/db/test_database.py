"""SQLite in WAL mode as the embedded default; Alembic migrations that build exactly the
schema the SQLAlchemy models declare, on SQLite and on PostgreSQL."""

from __future__ import annotations

import warnings
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from pair.core.node import Node, open_node
from pair.db import models_registry
from pair.db.migrate import alembic_config


def test_embedded_sqlite_is_in_the_data_dir_in_wal_mode(tmp_path: Path) -> None:
    node = open_node(tmp_path / "node")
    try:
        assert node.db.is_sqlite
        assert (tmp_path / "node" / "pair.db").is_file()
        with node.db.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        node.close()


def test_migrations_match_the_models(node: Node) -> None:
    script = ScriptDirectory.from_config(alembic_config(node.db.url))
    with node.db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert set(ctx.get_current_heads()) == set(script.get_heads())
        with warnings.catch_warnings():
            # SQLite cannot reflect expression indexes; Alembic says so and skips them
            warnings.simplefilter("ignore")
            diff = compare_metadata(ctx, models_registry.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
