"""fidelity: the modules a precision policy keeps in fp32 and its measured fidelity against fp32, on each
worker's row and each job's metrics

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_COLUMNS = ('keep_fp32', 'fidelity_mel_db', 'fidelity_snr_db', 'fidelity_duration_error')


def upgrade() -> None:
    for table in ('workers', 'job_metrics'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('keep_fp32', sa.String(length=128), server_default='', nullable=False))
            batch.add_column(sa.Column('fidelity_mel_db', sa.Float(), nullable=True))
            batch.add_column(sa.Column('fidelity_snr_db', sa.Float(), nullable=True))
            batch.add_column(sa.Column('fidelity_duration_error', sa.Float(), nullable=True))


def downgrade() -> None:
    for table in ('job_metrics', 'workers'):
        with op.batch_alter_table(table) as batch:
            for column in reversed(_COLUMNS):
                batch.drop_column(column)
