"""a signature for each model artifact

An artifact is a pickle: its sha256, kept beside it in this database, proves only that the bytes are the
ones recorded, not who recorded them. Each version now carries an HMAC of its artifact made with a key the
store does not hold (``freshloop.store.keys``), checked before anything is unpickled.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('versions') as batch:
        batch.add_column(sa.Column('artifact_hmac', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('versions') as batch:
        batch.drop_column('artifact_hmac')
