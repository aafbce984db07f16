"""per-epoch reports as rows (rf_reports) instead of a JSON list on the trial; the trial's last
checkpoint location

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Read the histories first: on SQLite the batch ALTER below recreates rf_trials, and dropping
    # the old table would cascade to report rows already written.
    bind = op.get_bind()
    trials = sa.table("rf_trials", sa.column("id", sa.Integer), sa.column("history", sa.JSON))
    rows = []
    for tid, history in bind.execute(sa.select(trials.c.id, trials.c.history)):
        seen = set()
        for h in history or []:
            epoch = int(h.get("epoch") or 0)
            if epoch not in seen:
                seen.add(epoch)
                rows.append({"trial_id": tid, "epoch": epoch, "row": h})
    with op.batch_alter_table("rf_trials") as batch:
        batch.drop_column("history")
        batch.add_column(sa.Column("checkpoint", sa.Text, nullable=True))
    reports = op.create_table(
        "rf_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trial_id", sa.Integer, sa.ForeignKey("rf_trials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("row", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("trial_id", "epoch", name="uq_report_epoch"),
    )
    op.create_index("ix_rf_reports_trial_id", "rf_reports", ["trial_id"])
    if rows:
        op.bulk_insert(reports, rows)


def downgrade() -> None:
    with op.batch_alter_table("rf_trials") as batch:
        batch.drop_column("checkpoint")
        batch.add_column(sa.Column("history", sa.JSON, nullable=False, server_default="[]"))
    op.drop_table("rf_reports")
