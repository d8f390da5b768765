"""The first arena schema: models, variants, prompts, outputs, voters, battles, votes.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "variants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("adapter", sa.String(50), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("model_id", "name"),
    )
    op.create_table(
        "prompts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("text_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "outputs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("media_type", sa.String(50), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "voters",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "battles",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("prompt_id", sa.Integer(), sa.ForeignKey("prompts.id"), nullable=False),
        sa.Column("variant_a_id", sa.Integer(), sa.ForeignKey("variants.id"), nullable=False),
        sa.Column("variant_b_id", sa.Integer(), sa.ForeignKey("variants.id"), nullable=False),
        sa.Column("output_a", sa.String(64), nullable=True),
        sa.Column("output_b", sa.String(64), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("pooled", sa.Boolean(), nullable=False),
        sa.Column("voter_id", sa.String(64), sa.ForeignKey("voters.id"), nullable=True),
        sa.Column("served_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_battles_status", "battles", ["status"])
    op.create_index("ix_battles_voter_id", "battles", ["voter_id"])
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("battle_id", sa.String(32), sa.ForeignKey("battles.id"), nullable=False, unique=True),
        sa.Column("voter_id", sa.String(64), sa.ForeignKey("voters.id"), nullable=False),
        sa.Column("ip_hash", sa.String(64), nullable=False),
        sa.Column("choice", sa.String(10), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(100), nullable=True),
        sa.Column("view_s", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_votes_voter_id", "votes", ["voter_id"])
    op.create_index("ix_votes_created_at", "votes", ["created_at"])


def downgrade() -> None:
    for table in ("votes", "battles", "voters", "outputs", "prompts", "variants", "models"):
        op.drop_table(table)
