"""index for ranking a study's trials per optimizer (best so far, /best, /export)

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trial_rank", "rf_trials", ["study_id", "optimizer", "status", "objective"])


def downgrade() -> None:
    op.drop_index("ix_trial_rank", table_name="rf_trials")
