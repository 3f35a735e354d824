"""books: a submitted EPUB or PDF, the owner of the chapter jobs that share its id as their group_id

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('books',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=512), nullable=False),
    sa.Column('author', sa.String(length=512), nullable=True),
    sa.Column('language', sa.String(length=32), nullable=True),
    sa.Column('source', sa.String(length=1024), nullable=True),
    sa.Column('source_sha256', sa.String(length=64), nullable=True),
    sa.Column('cover', sa.LargeBinary(), nullable=True),
    sa.Column('cover_type', sa.String(length=32), nullable=True),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('warnings', sa.JSON(), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=True),
    sa.Column('m4b_path', sa.String(length=1024), nullable=True),
    sa.Column('m4b_built_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_books'))
    )
    with op.batch_alter_table('books') as batch:
        batch.create_index('ix_books_key_id', ['key_id'], unique=False)
        batch.create_index('ix_books_created_at', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_table('books')
