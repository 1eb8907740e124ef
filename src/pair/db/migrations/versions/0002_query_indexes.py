"""QIDO-RS query indexes (found by benchmarks/qido_bench.py at 10^6 instances)

- ix_study_facility_patient_id: ``/studies?PatientID=`` is facility-scoped and ordered by date;
  without it SQLite walks every study of the facility through ix_study_facility_date.
- ix_series_study_modality: makes the ``ModalitiesInStudy`` EXISTS sub-query index-only.

Revision ID: 0002_query_indexes
Revises: 0001_core
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_query_indexes"
down_revision: str | Sequence[str] | None = "0001_core"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_study_facility_patient_id",
        "study",
        ["facility_id", "patient_id_value", "study_date"],
        unique=False,
    )
    op.create_index("ix_series_study_modality", "series", ["study_pk", "modality"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_series_study_modality", table_name="series")
    op.drop_index("ix_study_facility_patient_id", table_name="study")
