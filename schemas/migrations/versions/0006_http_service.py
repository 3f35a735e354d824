"""http service: API keys, the jobs the service accepted (idempotency keys, webhooks), webhook attempts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    op.create_table('service_jobs',
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('idempotency_key', sa.String(length=256), nullable=True),
    sa.Column('callback_url', sa.String(length=2048), nullable=True),
    sa.Column('webhook_state', sa.Enum('waiting', 'delivered', 'failed', name='webhookstate',
                                       native_enum=False, length=16), nullable=True),
    sa.Column('webhook_attempts', sa.Integer(), nullable=False),
    sa.Column('webhook_next_at', sa.DateTime(), nullable=True),
    sa.Column('webhook_claimed_by', sa.String(length=128), nullable=True),
    sa.Column('webhook_claim_expires_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_service_jobs_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', name=op.f('pk_service_jobs')),
    sa.UniqueConstraint('key_id', 'idempotency_key', name='uq_service_jobs_key_idempotency')
    )
    with op.batch_alter_table('service_jobs') as batch:
        batch.create_index('ix_service_jobs_key_id', ['key_id'], unique=False)
        batch.create_index('ix_service_jobs_webhook', ['webhook_state', 'webhook_next_at'], unique=False)
    op.create_table('webhook_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_webhook_attempts_job_id_jobs'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts'))
    )
    with op.batch_alter_table('webhook_attempts') as batch:
        batch.create_index(batch.f('ix_webhook_attempts_job_id'), ['job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_attempts') as batch:
        batch.drop_index(batch.f('ix_webhook_attempts_job_id'))
    op.drop_table('webhook_attempts')
    with op.batch_alter_table('service_jobs') as batch:
        batch.drop_index('ix_service_jobs_webhook')
        batch.drop_index('ix_service_jobs_key_id')
    op.drop_table('service_jobs')
    op.drop_table('api_keys')
