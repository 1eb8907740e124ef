"""A running node: settings plus database, opened the same way by server, CLI and tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from pair.core import fastpaths
from pair.core.config import Settings, get_settings
from pair.core.errors import PairError
from pair.db import migrate
from pair.db.session import Database


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class Node:
    settings: Settings
    db: Database
    # Resources a capability attaches at serve time under its own key (e.g. the repository's
    # ingest worker pool); core knows none of them, only that the node closes them.
    attachments: dict[str, Closeable] = field(default_factory=dict)

    def close(self) -> None:
        while self.attachments:
            _, resource = self.attachments.popitem()
            resource.close()
        self.db.dispose()


def open_node(
    data_dir: Path | str | None = None, *, settings: Settings | None = None, migrate_db: bool = True
) -> Node:
    """Create the data dir layout, bring the schema up to date and return the node."""
    settings = settings or get_settings(data_dir)
    fastpaths.configure(settings.fast_paths)
    try:
        settings.ensure_dirs()
    except OSError as exc:
        raise PairError(
            f"Cannot use data dir {settings.data_dir}: {exc.strerror or exc} ({exc.filename})."
        ) from None
    url = settings.resolved_database_url
    try:
        if migrate_db:
            migrate.upgrade(url)
        db = Database(url)
    except (ArgumentError, NoSuchModuleError, ImportError):
        raise PairError(
            "PAIR_DATABASE_URL is not a database URL this node can use (SQLite or PostgreSQL "
            "with psycopg), e.g. postgresql+psycopg://user:password@host/dbname."
        ) from None
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise PairError(f"Cannot open the database {_safe(url)}: {reason}") from None
    return Node(settings=settings, db=db)


def _safe(url: str) -> str:
    """The URL for messages, password hidden."""
    return make_url(url).render_as_string(hide_password=True)
