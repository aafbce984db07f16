"""the last epoch each trial reported (ranking prefers trials that went further: ASHA)

Revision ID: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rf_trials") as batch:
        batch.add_column(sa.Column("epochs", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("rf_trials") as batch:
        batch.drop_column("epochs")
