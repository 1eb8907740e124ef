"""A running node: settings plus database, opened the same way by server, CLI and tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pair.core.config import Settings, get_settings
from pair.db import migrate
from pair.db.session import Database


@dataclass
class Node:
    settings: Settings
    db: Database

    def close(self) -> None:
        self.db.dispose()


def open_node(
    data_dir: Path | str | None = None, *, settings: Settings | None = None, migrate_db: bool = True
) -> Node:
    """Create the data dir layout, bring the schema up to date and return the node."""
    settings = settings or get_settings(data_dir)
    settings.ensure_dirs()
    url = settings.resolved_database_url
    if migrate_db:
        migrate.upgrade(url)
    return Node(settings=settings, db=Database(url))
