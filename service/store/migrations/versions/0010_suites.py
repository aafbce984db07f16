"""suites: one submission over several workloads, one ordinary study per workload entry

Revision ID: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rf_suites",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(100), nullable=True, index=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # per owner, as for studies (0009): one user's key never finds another user's suite
    op.create_index("uq_suite_idempotency", "rf_suites", ["owner", "idempotency_key"], unique=True)
    # Plain ALTERs, never a batch recreate: on SQLite rebuilding rf_studies cascade-deletes every
    # trial through the foreign key (see 0009).
    op.add_column("rf_studies", sa.Column("suite_id", sa.String(36), nullable=True))
    op.create_index("ix_rf_studies_suite_id", "rf_studies", ["suite_id"])


def downgrade() -> None:
    op.drop_index("ix_rf_studies_suite_id", table_name="rf_studies")
    op.execute("ALTER TABLE rf_studies DROP COLUMN suite_id")  # SQLite >= 3.35 and PostgreSQL alike
    op.drop_table("rf_suites")
