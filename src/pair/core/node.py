"""A running node: settings plus database, opened the same way by server, CLI and tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pair.core.config import Settings, get_settings
from pair.db import migrate
from pair.db.session import Database

if TYPE_CHECKING:
    from pair.repository.workers import IngestWorkers


@dataclass
class Node:
    settings: Settings
    db: Database
    # set by ``pair serve``: ingest stage one runs in these worker processes (all cores)
    ingest_workers: IngestWorkers | None = None

    def close(self) -> None:
        if self.ingest_workers is not None:
            self.ingest_workers.close()
            self.ingest_workers = None
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
