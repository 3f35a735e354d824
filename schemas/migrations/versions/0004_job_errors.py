"""job_errors: why each attempt at a job stopped

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_errors',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=128), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_errors_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_errors'))
    )
    with op.batch_alter_table('job_errors') as batch:
        batch.create_index(batch.f('ix_job_errors_job_id'), ['job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job_errors') as batch:
        batch.drop_index(batch.f('ix_job_errors_job_id'))
    op.drop_table('job_errors')
