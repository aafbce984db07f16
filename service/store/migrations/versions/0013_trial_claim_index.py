"""an index on a trial's claim: the runner looks a claim up at every trial it starts (without it,
a scan of every trial the database holds)

Revision ID: 0013
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trial_claim", "rf_trials", ["claim"])


def downgrade() -> None:
    op.drop_index("ix_trial_claim", table_name="rf_trials")
