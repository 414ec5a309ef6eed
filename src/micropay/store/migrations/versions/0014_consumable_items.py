"""Consumable items: a price per use (each purchase charges again, nothing is kept).

Revision ID: 0014_consumable_items
Revises: 0013_tip_earnings
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_consumable_items"
down_revision = "0013_tip_earnings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(
            sa.Column("consumable", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("consumable")
