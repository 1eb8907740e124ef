"""Index for PatientName prefix matching (``PatientName=Smith*``) in QIDO-RS and C-FIND

PN matching is case-insensitive: the query compares ``lower(patient_name)``. The index is on
that expression; on PostgreSQL with ``text_pattern_ops`` so that ``LIKE 'smith%'`` uses it under
any database collation, on SQLite as a plain expression index that the query's added range
condition uses (see ``pair.repository.query.PnPrefix``).

Revision ID: 0003_patient_name_index
Revises: 0002_query_indexes
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_patient_name_index"
down_revision: str | Sequence[str] | None = "0002_query_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_study_facility_lower_name",
        "study",
        [sa.column("facility_id"), sa.func.lower(sa.column("patient_name")).label("lower_name")],
        unique=False,
        postgresql_ops={"lower_name": "text_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_study_facility_lower_name", table_name="study")
