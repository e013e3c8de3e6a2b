"""dispatch bookkeeping (enqueued_at), retention stamps and the indexes both passes query by

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 08:40:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.core.models

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing queued jobs and validating batches start with enqueued_at NULL, so the dispatcher sends each
    # once more after the upgrade: a duplicate message is harmless (claims are fenced), a missing one is not.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enqueued_at', service.core.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('image_expired_at', service.core.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('result_expired_at', service.core.models.UTCDateTime(), nullable=True))
        batch_op.create_index('ix_jobs_status_enqueued_at', ['status', 'enqueued_at'], unique=False)
        batch_op.create_index('ix_jobs_finished_at', ['finished_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_image_sha256'), ['image_sha256'], unique=False)
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enqueued_at', service.core.models.UTCDateTime(), nullable=True))
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_files_sha256'), ['sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_files_sha256'))
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('enqueued_at')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_image_sha256'))
        batch_op.drop_index('ix_jobs_finished_at')
        batch_op.drop_index('ix_jobs_status_enqueued_at')
        batch_op.drop_column('result_expired_at')
        batch_op.drop_column('image_expired_at')
        batch_op.drop_column('enqueued_at')
