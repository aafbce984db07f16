"""a trial's claim: the runner's idempotency token for handing it to a worker (a claimed trial
stays pending until its worker starts it)

Revision ID: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ALTER, never a batch recreate: on SQLite rebuilding rf_trials cascade-deletes every
    # report row through the foreign key (see 0009).
    op.add_column("rf_trials", sa.Column("claim", sa.String(36), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE rf_trials DROP COLUMN claim")  # SQLite >= 3.35 and PostgreSQL alike
