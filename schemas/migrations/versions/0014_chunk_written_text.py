"""chunk written text: the text a chunk says as it was written, for subtitles (None: its spoken text)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('chunks') as batch:
        batch.add_column(sa.Column('written', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('chunks') as batch:
        batch.drop_column('written')
