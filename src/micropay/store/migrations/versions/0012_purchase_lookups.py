"""Purchases waiting for a direct charge: found by an index, not a scan of the customer.

Every purchase at a merchant that takes direct charges asks whether a direct
charge for the same item already waits (that charge is this purchase). The
only index that served it was ``purchases_by_customer``, which reads every
purchase the customer ever made; this partial index holds only the waiting ones.

Revision ID: 0012_purchase_lookups
Revises: 0011_webhooks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_purchase_lookups"
down_revision = "0011_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "purchases_charge_pending",
        "purchases",
        ["customer_id", "merchant_id", "item_ref", "created_at_us"],
        sqlite_where=sa.text("status = 'charge_pending'"),
        postgresql_where=sa.text("status = 'charge_pending'"),
    )


def downgrade() -> None:
    op.drop_index("purchases_charge_pending", table_name="purchases")
