"""segments: long jobs leased in parts

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('segments',
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('first_chunk', sa.Integer(), nullable=False),
    sa.Column('end_chunk', sa.Integer(), nullable=False),
    sa.Column('chars', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', 'cancelled', name='jobstatus',
                                native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('worker_id', sa.String(length=128), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_segments_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'idx', name=op.f('pk_segments'))
    )
    with op.batch_alter_table('segments') as batch:
        batch.create_index('ix_segments_status_lease', ['status', 'lease_expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('segments') as batch:
        batch.drop_index('ix_segments_status_lease')
    op.drop_table('segments')
