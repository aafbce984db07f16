"""a trial's claim: the runner's idempotency token for handing it to a worker (a claimed trial
stays pending until its worker starts it)

Revision ID: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rf_trials") as batch:
        batch.add_column(sa.Column("claim", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rf_trials") as batch:
        batch.drop_column("claim")
