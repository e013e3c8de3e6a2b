"""presets, structured results and the dedup cache

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 06:35:21.089909
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('preset', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('response_schema', sa.JSON(), nullable=True))
        # Existing rows were not grounded; the default only fills them, the models set the value from then on.
        batch_op.add_column(sa.Column('ground_with_ocr', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('cache_key', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('cached_from', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('result_json', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('result_lines', sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_cache_key'), ['cache_key'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('ground_with_ocr', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_cache_key'))
        batch_op.drop_column('result_lines')
        batch_op.drop_column('result_json')
        batch_op.drop_column('cached_from')
        batch_op.drop_column('cache_key')
        batch_op.drop_column('ground_with_ocr')
        batch_op.drop_column('response_schema')
        batch_op.drop_column('preset')
