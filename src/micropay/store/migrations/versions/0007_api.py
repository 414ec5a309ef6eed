"""HTTP API: merchant modes, API keys (hashed), customer ownership, idempotent responses.

Revision ID: 0007_api
Revises: 0006_merge
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_api"
down_revision = "0006_merge"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Int64 = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "api_merchants",
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("mode", sa.String(4), nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.CheckConstraint("mode IN ('test', 'live')", name="api_merchant_mode"),
    )
    op.create_table(
        "api_keys",
        sa.Column("lookup", sa.String(16), primary_key=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("mode", sa.String(4), nullable=False),
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), nullable=True),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.Column("revoked_at_us", Int64, nullable=True),
        sa.CheckConstraint("kind IN ('secret', 'publishable', 'operator')", name="api_key_kind"),
        sa.CheckConstraint("mode IN ('test', 'live')", name="api_key_mode"),
        sa.CheckConstraint(
            "(kind = 'operator') = (merchant_id IS NULL)", name="api_key_merchant_unless_operator"
        ),
    )
    op.create_index("api_keys_by_merchant", "api_keys", ["merchant_id", "created_at_us"])
    op.create_table(
        "api_customers",
        sa.Column("customer_id", Int64, sa.ForeignKey("customers.id"), primary_key=True),
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
    )
    op.create_index(
        "api_customers_by_merchant", "api_customers", ["merchant_id", "customer_id"], unique=True
    )
    op.create_index("purchases_by_merchant_id", "purchases", ["merchant_id", "id"])
    op.create_table(
        "api_idempotency",
        sa.Column("owner", sa.String(40), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.CheckConstraint("state IN ('in_progress', 'done')", name="api_idempotency_state"),
    )


def downgrade() -> None:
    op.drop_table("api_idempotency")
    op.drop_index("purchases_by_merchant_id", table_name="purchases")
    op.drop_index("api_customers_by_merchant", table_name="api_customers")
    op.drop_table("api_customers")
    op.drop_index("api_keys_by_merchant", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("api_merchants")
