"""output names and chunk voices: a job's file named after its input; a chunk's own voice (dialogue)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('output_name', sa.String(length=1024), nullable=True))
        batch.create_index(batch.f('ix_jobs_output_name'), ['output_name'], unique=True)
    with op.batch_alter_table('chunks') as batch:
        batch.add_column(sa.Column('voice', sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('chunks') as batch:
        batch.drop_column('voice')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index(batch.f('ix_jobs_output_name'))
        batch.drop_column('output_name')
