"""the training seed of each trial (seed re-runs of the best configuration)

Revision ID: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rf_trials") as batch:
        batch.add_column(sa.Column("seed", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rf_trials") as batch:
        batch.drop_column("seed")
