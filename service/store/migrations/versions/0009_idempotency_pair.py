"""an idempotency key is unique per owner: (owner, key) as two columns, not one joined string

Before, the key was stored as "<owner>:<key>" and user names may contain ":", so "alice" with key
"bob:k1" and user "alice:bob" with key "k1" were the same string. Each old row keeps its meaning:
its owner is the study's owner, its key what follows that owner's prefix.

SQLite cannot drop the old column-level UNIQUE without recreating rf_studies, and recreating it
(drop + rename) would cascade-delete every trial through the foreign key. So on SQLite the old
column is renamed `legacy_idempotency_key` (left NULL, unused) and the key gets a new column; on
PostgreSQL the old constraint is simply dropped. Both end with a unique index on the pair.

Revision ID: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEX = "uq_study_idempotency"
LEGACY = "legacy_idempotency_key"


def _studies(key_column: str):
    return sa.table("rf_studies", sa.column("id", sa.String), sa.column("owner", sa.String),
                    sa.column("created_at"), sa.column(key_column, sa.String))


def _rewrite(bind, source: str, target: str, convert) -> None:
    """target = convert(owner, source) for every row with a key, oldest first (None: no key)."""
    t = _studies(source)
    rows = bind.execute(sa.select(t.c.id, t.c.owner, t.c[source]).where(t.c[source].is_not(None))
                        .order_by(t.c.created_at)).all()
    t = sa.table("rf_studies", sa.column("id", sa.String), sa.column(source, sa.String),
                 sa.column(target, sa.String))
    for sid, owner, key in rows:
        values = {target: convert(owner or "", key)}
        if source != target:
            values[source] = None
        bind.execute(sa.update(t).where(t.c.id == sid).values(**values))


def _split(owner: str, key: str) -> str:
    return key.removeprefix(f"{owner}:")  # the owner is known, so the split is never ambiguous


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(f"ALTER TABLE rf_studies RENAME COLUMN idempotency_key TO {LEGACY}")
        op.add_column("rf_studies", sa.Column("idempotency_key", sa.String(200), nullable=True))
        _rewrite(bind, LEGACY, "idempotency_key", _split)
    else:
        for uq in sa.inspect(bind).get_unique_constraints("rf_studies"):
            if uq["column_names"] == ["idempotency_key"]:
                op.drop_constraint(uq["name"], "rf_studies", type_="unique")
        _rewrite(bind, "idempotency_key", "idempotency_key", _split)
    op.create_index(INDEX, "rf_studies", ["owner", "idempotency_key"], unique=True)


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_index(INDEX, "rf_studies")
    # The joined form cannot hold two pairs that join to one string (the very collision this
    # revision removes) or a joined string over 200 characters: such a key is dropped (NULL), which
    # only ends its retry window; the study stays.
    seen: set[str] = set()

    def joined(owner: str, key: str) -> str | None:
        new = f"{owner}:{key}"
        if len(new) > 200 or new in seen:
            return None
        seen.add(new)
        return new

    if bind.dialect.name == "sqlite":
        _rewrite(bind, "idempotency_key", LEGACY, joined)
        op.execute("ALTER TABLE rf_studies DROP COLUMN idempotency_key")
        op.execute(f"ALTER TABLE rf_studies RENAME COLUMN {LEGACY} TO idempotency_key")
    else:
        _rewrite(bind, "idempotency_key", "idempotency_key", joined)
        op.create_unique_constraint("rf_studies_idempotency_key_key", "rf_studies", ["idempotency_key"])
