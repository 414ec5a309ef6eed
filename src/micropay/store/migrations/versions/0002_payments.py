"""Payment models: merchants, customers, catalogue, purchases, entitlements, charges.

Revision ID: 0002_payments
Revises: 0001_ledger
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_payments"
down_revision = "0001_ledger"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Int64 = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "merchants",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("public_id", sa.String(40), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("funding_policy", sa.String(64), nullable=False),
        sa.Column("fee_guard_max_bps", sa.Integer, nullable=False),
        sa.Column("fee_guard_refuses", sa.Boolean, nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.CheckConstraint("id > 0 AND id < 262144", name="merchant_number_range"),
    )
    op.create_table(
        "customers",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("public_id", sa.String(40), nullable=False, unique=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("processor_customer_token", sa.String(255), nullable=False),
        sa.Column("payment_method_token", sa.String(255), nullable=False),
        sa.Column("tab_limit_micros", Int64, nullable=False),
        sa.Column("tab_state", sa.String(16), nullable=False),
        sa.Column("tab_opened_at_us", Int64, nullable=False),
        sa.Column("auto_reload_threshold_micros", Int64, nullable=False),
        sa.Column("auto_reload_amount_micros", Int64, nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.CheckConstraint("tab_state IN ('open', 'frozen')", name="customer_tab_state"),
        sa.CheckConstraint("tab_limit_micros >= 0", name="customer_tab_limit"),
    )
    op.create_table(
        "items",
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("item_ref", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("price_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("access_period_s", Int64, nullable=False),
        sa.CheckConstraint("price_micros > 0", name="item_price_positive"),
    )
    op.create_table(
        "charges",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("customer_id", Int64, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("client_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("fee_micros", Int64, nullable=False),
        sa.Column("schedule", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("processor_charge_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("decline_code", sa.String(64), nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at_us", Int64, nullable=True),
        sa.Column("purchase_id", Int64, nullable=True),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.Column("updated_at_us", Int64, nullable=False),
        sa.UniqueConstraint("customer_id", "purpose", "client_key", name="charge_client_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'declined')", name="charge_status_known"
        ),
        sa.CheckConstraint("amount_micros > 0", name="charge_amount_positive"),
    )
    op.create_index(
        "charges_due",
        "charges",
        ["next_attempt_at_us"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "purchases",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("customer_id", Int64, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("item_ref", sa.String(128), nullable=False),
        sa.Column("price_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("funding", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("transfer_id", Int64, nullable=True),
        sa.Column("charge_id", Int64, nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("refunded_micros", Int64, nullable=False, server_default="0"),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.UniqueConstraint("merchant_id", "idempotency_key", name="purchase_idempotency_key"),
        sa.CheckConstraint(
            "refunded_micros >= 0 AND refunded_micros <= price_micros",
            name="purchase_refund_within_price",
        ),
    )
    op.create_index("purchases_by_customer", "purchases", ["customer_id", "created_at_us"])
    op.create_table(
        "entitlements",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("merchant_id", Int64, nullable=False),
        sa.Column("customer_id", Int64, nullable=False),
        sa.Column("item_ref", sa.String(128), nullable=False),
        sa.Column("purchase_id", Int64, sa.ForeignKey("purchases.id"), nullable=False),
        sa.Column("starts_at_us", Int64, nullable=False),
        sa.Column("ends_at_us", Int64, nullable=True),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "entitlements_lookup", "entitlements", ["merchant_id", "customer_id", "item_ref"]
    )
    op.create_table(
        "refunds",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("purchase_id", Int64, sa.ForeignKey("purchases.id"), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("transfer_id", Int64, nullable=True),
        sa.Column("processor_refund_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.UniqueConstraint("purchase_id", "idempotency_key", name="refund_idempotency_key"),
        sa.CheckConstraint("amount_micros > 0", name="refund_amount_positive"),
    )


def downgrade() -> None:
    for table in (
        "refunds",
        "entitlements",
        "purchases",
        "charges",
        "items",
        "customers",
        "merchants",
    ):
        op.drop_table(table)
