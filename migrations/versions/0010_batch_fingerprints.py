"""batches.request_sha256: what a batch asked for, so an Idempotency-Key reused for another request is caught

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 01:50:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null for existing batches: a key of theirs is replayed without a check, as when they were created.
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('request_sha256')
