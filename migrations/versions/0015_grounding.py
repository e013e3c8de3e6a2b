"""jobs.grounding: an extraction's grounded fields (value, confidence, page, box) and its review flag

Revision ID: 0015_grounding
Revises: 0014_openai_batch
Create Date: 2026-11-29 05:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015_grounding'
down_revision: str | None = '0014_openai_batch'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null for existing jobs, and for every job that is not an extraction.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('grounding', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('grounding')
