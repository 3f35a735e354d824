"""job_metrics.runtime: which inference runtime (torch or onnxruntime) synthesized the job

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_metrics') as batch:
        batch.add_column(sa.Column('runtime', sa.String(length=16), server_default='torch', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('job_metrics') as batch:
        batch.drop_column('runtime')
