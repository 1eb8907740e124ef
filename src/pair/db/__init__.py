"""Database foundation: one declarative base, one session pattern, Alembic migrations."""

from pair.db.base import Base
from pair.db.session import Database

__all__ = ["Base", "Database"]
