"""access: API keys; jobs, batches, files and webhooks belong to a tenant; idempotency keys are unique per tenant

Rows from before this revision belong to the tenant "default" (what every request acts as with auth off).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 08:30:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.core.models

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_TENANT = 'default'  # service.core.tenancy.DEFAULT_TENANT, frozen here as migrations must be
TENANT_TABLES = ('jobs', 'batches', 'files', 'webhook_endpoints', 'webhook_deliveries')
IDEMPOTENT_TABLES = ('jobs', 'batches')
# The idempotency_key unique constraints of 0001/0002 have no name in SQLite; batch mode names them by this
# convention when it reflects the table, so they can be dropped.
NAMING = {'uq': 'uq_%(table_name)s_%(column_0_name)s'}


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('admin', sa.Boolean(), nullable=False),
    sa.Column('rate_limit_rps', sa.Float(), nullable=True),
    sa.Column('max_queued_jobs', sa.Integer(), nullable=True),
    sa.Column('created_at', service.core.models.UTCDateTime(), nullable=False),
    sa.Column('last_used_at', service.core.models.UTCDateTime(), nullable=True),
    sa.Column('revoked_at', service.core.models.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    for table in TENANT_TABLES:
        # The default fills the existing rows, then goes: a new row that names no tenant must fail its insert.
        op.add_column(table, sa.Column('tenant', sa.String(length=64), nullable=False, server_default=DEFAULT_TENANT))
        old_unique = _idempotency_unique_name(table) if table in IDEMPOTENT_TABLES else None
        with op.batch_alter_table(table, naming_convention=NAMING) as batch_op:
            batch_op.alter_column('tenant', existing_type=sa.String(length=64), existing_nullable=False,
                                  server_default=None)
            batch_op.create_index(f'ix_{table}_tenant_id', ['tenant', 'id'], unique=False)
            if old_unique:
                batch_op.drop_constraint(old_unique, type_='unique')
                batch_op.create_unique_constraint(f'uq_{table}_tenant_idempotency_key', ['tenant', 'idempotency_key'])
            if table == 'jobs':
                batch_op.create_index('ix_jobs_tenant_status_id', ['tenant', 'status', 'id'], unique=False)


def downgrade() -> None:
    # Fails if two tenants used the same Idempotency-Key: the old schema cannot hold both.
    for table in reversed(TENANT_TABLES):
        with op.batch_alter_table(table) as batch_op:
            if table == 'jobs':
                batch_op.drop_index('ix_jobs_tenant_status_id')
            if table in IDEMPOTENT_TABLES:
                batch_op.drop_constraint(f'uq_{table}_tenant_idempotency_key', type_='unique')
                batch_op.create_unique_constraint(f'uq_{table}_idempotency_key', ['idempotency_key'])
            batch_op.drop_index(f'ix_{table}_tenant_id')
            batch_op.drop_column('tenant')
    op.drop_table('api_keys')


def _idempotency_unique_name(table: str) -> str:
    """The name of `table`'s single-column unique constraint on idempotency_key."""
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        return f'uq_{table}_idempotency_key'  # given by NAMING when the batch reflects the table
    return next(constraint['name'] for constraint in sa.inspect(bind).get_unique_constraints(table)
                if constraint['column_names'] == ['idempotency_key'])
