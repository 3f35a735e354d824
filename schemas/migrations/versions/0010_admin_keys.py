"""admin keys: an API key that sees every tenant's jobs (`ttsfleet keys create --admin`)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('admin', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('admin')
