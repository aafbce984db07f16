"""user names compare case-insensitively (issue 30): every stored name (tokens' users, studies'
and suites' owners) is folded. Two existing users whose names differ only in case would become
one: the migration refuses (nothing changes) and names them, for the operator to decide.

Revision ID: 0014
"""

import sqlalchemy as sa
from alembic import op

from service.store.engine import MigrationRefused

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMNS = (("rf_tokens", "user"), ("rf_studies", "owner"), ("rf_suites", "owner"))


def fold(name: str) -> str:
    return name.casefold()


def upgrade() -> None:
    conn = op.get_bind()
    names: set[str] = set()
    for table, column in COLUMNS:
        t = sa.table(table, sa.column(column))
        names.update(v for v in conn.execute(sa.select(t.c[column]).distinct()).scalars() if v is not None)
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(fold(name), []).append(name)
    clashes = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    if clashes:
        listed = "; ".join(" and ".join(repr(n) for n in g) for g in clashes)
        raise MigrationRefused(
            f"user names now compare case-insensitively, and these users of the study database differ only "
            f"in case: {listed}. Nothing was changed. Rename one of each (UPDATE rf_tokens SET \"user\" = ..., "
            "and the owner of rf_studies and rf_suites), then start again")
    for table, column in COLUMNS:
        t = sa.table(table, sa.column(column))
        for name in names:
            if fold(name) != name:
                conn.execute(sa.update(t).where(t.c[column] == name).values({column: fold(name)}))


def downgrade() -> None:
    pass  # the original case is not kept
