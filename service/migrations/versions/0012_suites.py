"""suites: one submission over several workloads, one ordinary study per workload entry

Revision ID: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
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
    with op.batch_alter_table("rf_studies") as batch:
        batch.add_column(sa.Column("suite_id", sa.String(36), nullable=True))
        batch.create_index("ix_rf_studies_suite_id", ["suite_id"])


def downgrade() -> None:
    with op.batch_alter_table("rf_studies") as batch:
        batch.drop_index("ix_rf_studies_suite_id")
        batch.drop_column("suite_id")
    op.drop_table("rf_suites")
