"""OpenAI Batch features: files' expires_at, batches' output_expires_after_s, webhook endpoints' payload format

Revision ID: 0014_openai_batch
Revises: 0013_batch_counters
Create Date: 2026-11-29 04:30:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014_openai_batch'
down_revision: str | None = '0013_batch_counters'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_files_expires_at', ['expires_at'], unique=False)
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('output_expires_after_s', sa.Integer(), nullable=True))
    # Existing endpoints keep VLQ's own payloads.
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('format', sa.String(length=16), nullable=False, server_default='vlq'))
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.alter_column('format', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.drop_column('format')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('output_expires_after_s')
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_expires_at')
        batch_op.drop_column('expires_at')
