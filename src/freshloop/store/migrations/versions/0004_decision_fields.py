"""what fired a retrain and what held one back, as fields

The loop acted on the first words of a decision's reason (a retrain for a detected change gets a follow-up),
so rewording a message changed what it did. A decision now records the triggers that fired (one per reason)
and the guard that held a retrain back; the loop reads those alone. Rows written before this revision get
both from their reasons, once, here.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_GUARDS = {"guard": "min_new_labels", "no trigger configured (never retrains)": "never"}


def _guard(reason: str) -> str:
    head = reason.split(":", 1)[0]
    return "rollout in progress" if head.startswith("rollout of version") else _GUARDS.get(head, head)[:40]


def upgrade() -> None:
    with op.batch_alter_table('decisions') as batch:
        batch.add_column(sa.Column('triggers', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('guard', sa.String(length=40), nullable=True))
    decisions = sa.table('decisions', sa.column('id', sa.Integer), sa.column('kind', sa.String),
                         sa.column('reasons', sa.JSON), sa.column('triggers', sa.JSON),
                         sa.column('guard', sa.String))
    conn = op.get_bind()
    for row in conn.execute(sa.select(decisions.c.id, decisions.c.kind, decisions.c.reasons)).all():
        reasons = list(row.reasons or [])
        values: dict[str, object]
        if row.kind == "retrain":
            values = {"triggers": [r.split(":", 1)[0] for r in reasons]}
        else:
            values = {"triggers": [], "guard": _guard(reasons[0]) if reasons else None}
        conn.execute(decisions.update().where(decisions.c.id == row.id).values(**values))


def downgrade() -> None:
    with op.batch_alter_table('decisions') as batch:
        batch.drop_column('guard')
        batch.drop_column('triggers')
