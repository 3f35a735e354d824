"""admin keys (a key that sees every tenant's jobs) and quota reservations (a key's submissions in flight)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('admin', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table('quota_reservations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('jobs', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quota_reservations'))
    )
    with op.batch_alter_table('quota_reservations') as batch:
        batch.create_index('ix_quota_reservations_key_id', ['key_id'], unique=False)


def downgrade() -> None:
    op.drop_table('quota_reservations')
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('admin')
