"""Renamed Alembic revisions: rewrite an old database's version table before upgrading.

Alembic stops with "Can't locate revision" when ``alembic_version`` names a revision id that no
longer exists. A rename is recorded here (old id -> id of the same schema change today) and the
version table is rewritten before the migrations run, so databases created before the rename
upgrade like any other.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

# qido_0001 (own branch "qido", depending on core 0003) became core revision 0004 unchanged:
# the same Bits Allocated column, moved onto the core branch.
RENAMED_REVISIONS: dict[str, str] = {"qido_0001": "0004_instance_bits_allocated"}

_VERSION_TABLE = sa.table("alembic_version", sa.column("version_num", sa.String(32)))


def _ancestors(script: ScriptDirectory, revision: str) -> set[str]:
    """Every revision ``revision`` needs (down revisions and dependencies), itself excluded."""
    walked = script.revision_map.iterate_revisions(revision, "base")
    return {rev.revision for rev in walked if rev is not None} - {revision}


def apply_revision_aliases(connection: Connection, script: ScriptDirectory) -> bool:
    """Replace renamed ids in ``alembic_version``; True when the table was rewritten.

    A renamed revision may now sit on a branch whose earlier revision the table also lists:
    rows that another row already implies are dropped, as Alembic itself would store them.
    """
    if not sa.inspect(connection).has_table("alembic_version"):
        return False
    rows = set(connection.scalars(sa.select(_VERSION_TABLE.c.version_num)))
    if not rows & RENAMED_REVISIONS.keys():
        return False
    renamed = {RENAMED_REVISIONS.get(r, r) for r in rows}
    implied: set[str] = set()
    for rev in renamed:
        implied |= _ancestors(script, rev)
    connection.execute(sa.delete(_VERSION_TABLE))
    connection.execute(
        sa.insert(_VERSION_TABLE), [{"version_num": v} for v in sorted(renamed - implied)]
    )
    return True
