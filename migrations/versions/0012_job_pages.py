"""job_pages and jobs.page_mode: jobs on documents (PDF, TIFF, HEIC) and on several images, page by page

Revision ID: 0012_job_pages
Revises: 0011_seed
Create Date: 2026-11-29 04:40:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012_job_pages'
down_revision: str | None = '0011_seed'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null for existing jobs: one plain image each, without page rows.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('page_mode', sa.String(length=16), nullable=True))
    op.create_table(
        'job_pages',
        sa.Column('job_id', sa.String(length=40), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('source_sha256', sa.String(length=64), nullable=False),
        sa.Column('source_format', sa.String(length=8), nullable=False),
        sa.Column('source_index', sa.Integer(), nullable=False),
        sa.Column('blob_sha256', sa.String(length=64), nullable=True),
        sa.Column('width', sa.Integer(), nullable=False),
        sa.Column('height', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('result_text', sa.Text(), nullable=True),
        sa.Column('result_json', sa.JSON(), nullable=True),
        sa.Column('result_lines', sa.JSON(), nullable=True),
        sa.Column('finish_reason', sa.String(length=16), nullable=True),
        sa.Column('prompt_tokens', sa.Integer(), nullable=True),
        sa.Column('completion_tokens', sa.Integer(), nullable=True),
        sa.Column('ttft_ms', sa.Double(), nullable=True),
        sa.Column('inference_ms', sa.Double(), nullable=True),
        sa.Column('error_code', sa.String(length=64), nullable=True),
        sa.Column('error_message', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', 'position'),
    )
    with op.batch_alter_table('job_pages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_pages_blob_sha256'), ['blob_sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_pages_source_sha256'), ['source_sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job_pages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_pages_source_sha256'))
        batch_op.drop_index(batch_op.f('ix_job_pages_blob_sha256'))
    op.drop_table('job_pages')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('page_mode')
