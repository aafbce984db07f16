"""an idempotency key is unique per owner: (owner, key) as two columns, not one joined string

Before, the key was stored as "<owner>:<key>" and user names may contain ":", so "alice" with key
"bob:k1" and user "alice:bob" with key "k1" were the same string. Each old row keeps its meaning:
its owner is the study's owner, its key what follows that owner's prefix.

Revision ID: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# SQLite reflects the old column-level UNIQUE without a name: the convention gives it one to drop.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
studies = sa.table("rf_studies", sa.column("id", sa.String), sa.column("owner", sa.String), sa.column("created_at"),
                   sa.column("idempotency_key", sa.String))


def _old_unique_name(bind) -> str:
    for uq in sa.inspect(bind).get_unique_constraints("rf_studies"):
        if uq["column_names"] == ["idempotency_key"] and uq.get("name"):
            return uq["name"]
    return "uq_rf_studies_idempotency_key"


def _rewrite(bind, convert) -> None:
    rows = bind.execute(sa.select(studies.c.id, studies.c.owner, studies.c.idempotency_key)
                        .where(studies.c.idempotency_key.is_not(None)).order_by(studies.c.created_at)).all()
    for sid, owner, key in rows:
        new = convert(owner or "", key)
        if new != key:
            bind.execute(sa.update(studies).where(studies.c.id == sid).values(idempotency_key=new))


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("rf_studies", naming_convention=NAMING) as batch:
        batch.drop_constraint(_old_unique_name(bind), type_="unique")
    # "<owner>:<key>" -> "<key>": the owner is known, so the split is never ambiguous.
    _rewrite(bind, lambda owner, key: key.removeprefix(f"{owner}:"))
    with op.batch_alter_table("rf_studies") as batch:
        batch.create_unique_constraint("uq_study_idempotency", ["owner", "idempotency_key"])


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("rf_studies") as batch:
        batch.drop_constraint("uq_study_idempotency", type_="unique")
    # The joined form cannot hold two pairs that join to one string (the very collision this
    # revision removes) or a joined string over 200 characters: such a key is dropped (NULL), which
    # only ends its retry window.
    seen: set[str] = set()

    def joined(owner: str, key: str) -> str | None:
        new = f"{owner}:{key}"
        if len(new) > 200 or new in seen:
            return None
        seen.add(new)
        return new

    _rewrite(bind, joined)
    with op.batch_alter_table("rf_studies") as batch:
        batch.create_unique_constraint("uq_rf_studies_idempotency_key", ["idempotency_key"])
