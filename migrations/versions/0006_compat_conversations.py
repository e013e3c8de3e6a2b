"""conversations, streaming and top_p on jobs (compatible chat endpoints)

Revision ID: compat_0006
Revises: 0005
Create Date: 2026-11-21 09:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'compat_0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('top_p', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('messages', sa.JSON(), nullable=True))
        # Existing rows were not streamed; the default only fills them, the models set the value from then on.
        batch_op.add_column(sa.Column('stream', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('stream', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('stream')
        batch_op.drop_column('messages')
        batch_op.drop_column('top_p')
