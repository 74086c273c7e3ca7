"""what the policy remembers after each decision

A loop driven by separate processes (cron calling ``freshloop ingest`` and ``freshloop tick``), a restarted
server and a replay must decide the same: the policy's streaks and the drift a training run saw are kept with
the decision that produced them, and read back when a loop opens.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('decisions') as batch:
        batch.add_column(sa.Column('state', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('decisions') as batch:
        batch.drop_column('state')
