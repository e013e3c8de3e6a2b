"""batches: the items' counts and token totals kept on the row, and the items' model

Revision ID: 0013_batch_counters
Revises: 0012_job_pages
Create Date: 2026-11-29 04:30:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013_batch_counters'
down_revision: str | None = '0012_job_pages'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTERS = ('request_total', 'request_completed', 'request_failed', 'request_cancelled')
_TOKENS = ('input_tokens', 'output_tokens')

# Existing batches get what the job state machine would have counted: every item, each ended one by its state,
# and the tokens of the ended ones; the model is their items' one, if they ask for one (refused items aside).
_BACKFILL = """
UPDATE batches SET
    request_total = (SELECT count(*) FROM jobs WHERE jobs.batch_id = batches.id),
    request_completed = (SELECT count(*) FROM jobs WHERE jobs.batch_id = batches.id AND jobs.status = 'succeeded'),
    request_failed = (SELECT count(*) FROM jobs WHERE jobs.batch_id = batches.id AND jobs.status = 'failed'),
    request_cancelled = (SELECT count(*) FROM jobs WHERE jobs.batch_id = batches.id AND jobs.status = 'cancelled'),
    input_tokens = (SELECT coalesce(sum(jobs.prompt_tokens), 0) FROM jobs WHERE jobs.batch_id = batches.id
                    AND jobs.status IN ('succeeded', 'failed', 'cancelled')),
    output_tokens = (SELECT coalesce(sum(jobs.completion_tokens), 0) FROM jobs WHERE jobs.batch_id = batches.id
                     AND jobs.status IN ('succeeded', 'failed', 'cancelled')),
    model = (SELECT CASE WHEN count(DISTINCT jobs.model) = 1 THEN min(jobs.model) END FROM jobs
             WHERE jobs.batch_id = batches.id AND jobs.request_sha256 != '')
"""


def upgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model', sa.String(length=128), nullable=True))
        for name in _COUNTERS:
            batch_op.add_column(sa.Column(name, sa.Integer(), server_default='0', nullable=False))
        for name in _TOKENS:
            batch_op.add_column(sa.Column(name, sa.BigInteger(), server_default='0', nullable=False))
    op.execute(_BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        for name in (*_TOKENS, *_COUNTERS, 'model'):
            batch_op.drop_column(name)
