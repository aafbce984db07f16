"""claims of external trials (execution: external): the claim token and its lease

Revision ID: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTERs, never a batch recreate: on SQLite rebuilding rf_trials cascade-deletes every
    # report row through the foreign key (see 0009).
    op.add_column("rf_trials", sa.Column("claim_token", sa.String(64), nullable=True))
    op.add_column("rf_trials", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE rf_trials DROP COLUMN lease_expires_at")  # SQLite >= 3.35 and PostgreSQL
    op.execute("ALTER TABLE rf_trials DROP COLUMN claim_token")
