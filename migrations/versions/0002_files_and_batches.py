"""files and batches

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 06:34:31.592732
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.core.models

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('endpoint', sa.String(length=64), nullable=False),
    sa.Column('input_file_id', sa.String(length=40), nullable=True),
    sa.Column('completion_window', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('errors', sa.JSON(), nullable=True),
    sa.Column('output_file_id', sa.String(length=40), nullable=True),
    sa.Column('error_file_id', sa.String(length=40), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('created_at', service.core.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', service.core.models.UTCDateTime(), nullable=False),
    sa.Column('in_progress_at', service.core.models.UTCDateTime(), nullable=True),
    sa.Column('finalizing_at', service.core.models.UTCDateTime(), nullable=True),
    sa.Column('completed_at', service.core.models.UTCDateTime(), nullable=True),
    sa.Column('failed_at', service.core.models.UTCDateTime(), nullable=True),
    sa.Column('expired_at', service.core.models.UTCDateTime(), nullable=True),
    sa.Column('cancelling_at', service.core.models.UTCDateTime(), nullable=True),
    sa.Column('cancelled_at', service.core.models.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batches_status'), ['status'], unique=False)

    op.create_table('files',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('bytes', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', service.core.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('custom_id', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('finish_reason', sa.String(length=16), nullable=True))
        batch_op.alter_column('image_sha256',
               existing_type=sa.VARCHAR(length=64),
               nullable=True)
        batch_op.alter_column('image_format',
               existing_type=sa.VARCHAR(length=8),
               nullable=True)
        batch_op.alter_column('image_width',
               existing_type=sa.INTEGER(),
               nullable=True)
        batch_op.alter_column('image_height',
               existing_type=sa.INTEGER(),
               nullable=True)
        batch_op.create_index('ix_jobs_batch_id_status', ['batch_id', 'status'], unique=False)
        batch_op.create_unique_constraint('uq_jobs_batch_custom_id', ['batch_id', 'custom_id'])
        batch_op.create_foreign_key('fk_jobs_batch_id_batches', 'batches', ['batch_id'], ['id'], ondelete='CASCADE')



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_batch_id_batches', type_='foreignkey')
        batch_op.drop_constraint('uq_jobs_batch_custom_id', type_='unique')
        batch_op.drop_index('ix_jobs_batch_id_status')
        batch_op.alter_column('image_height',
               existing_type=sa.INTEGER(),
               nullable=False)
        batch_op.alter_column('image_width',
               existing_type=sa.INTEGER(),
               nullable=False)
        batch_op.alter_column('image_format',
               existing_type=sa.VARCHAR(length=8),
               nullable=False)
        batch_op.alter_column('image_sha256',
               existing_type=sa.VARCHAR(length=64),
               nullable=False)
        batch_op.drop_column('finish_reason')
        batch_op.drop_column('custom_id')
        batch_op.drop_column('batch_id')

    op.drop_table('files')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batches_status'))

    op.drop_table('batches')
