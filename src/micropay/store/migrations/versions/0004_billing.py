"""Billing: tips, meters and usage events, subscription plans, subscriptions and their periods.

Revision ID: 0004_billing
Revises: 0002_payments
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_billing"
down_revision = "0002_payments"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Int64 = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "tip_limits",
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("tip_micros_min", Int64, nullable=False),
        sa.Column("tip_micros_max", Int64, nullable=False),
        sa.CheckConstraint(
            "tip_micros_min > 0 AND tip_micros_min <= tip_micros_max", name="tip_limits_order"
        ),
    )
    op.create_table(
        "tips",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("customer_id", Int64, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("funding", sa.String(16), nullable=False),
        sa.Column("transfer_id", Int64, nullable=False),
        sa.Column("note", sa.String(280), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.UniqueConstraint("merchant_id", "idempotency_key", name="tip_idempotency_key"),
        sa.UniqueConstraint("transfer_id", name="tip_transfer_once"),
        sa.CheckConstraint("amount_micros > 0", name="tip_amount_positive"),
        sa.CheckConstraint("funding IN ('wallet', 'tab')", name="tip_funding_prepaid"),
    )
    op.create_table(
        "meters",
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("meter", sa.String(64), primary_key=True),
        sa.Column("unit_price_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.CheckConstraint(
            "unit_price_micros >= 1 AND unit_price_micros <= 1000000", name="meter_unit_price"
        ),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("merchant_id", Int64, nullable=False),
        sa.Column("customer_id", Int64, nullable=False),
        sa.Column("meter", sa.String(64), nullable=False),
        sa.Column("quantity", Int64, nullable=False),
        sa.Column("unit_price_micros", Int64, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("occurred_at_us", Int64, nullable=False),
        sa.Column("posting_id", Int64, nullable=True),  # set once, when billed
        sa.UniqueConstraint("merchant_id", "idempotency_key", name="usage_idempotency_key"),
        sa.CheckConstraint("quantity >= 1 AND quantity <= 1000000", name="usage_quantity_in_range"),
        sa.CheckConstraint(
            "unit_price_micros >= 1 AND unit_price_micros <= 1000000", name="usage_unit_price"
        ),
    )
    op.create_index(
        "usage_events_unbilled",
        "usage_events",
        ["merchant_id", "customer_id", "meter", "occurred_at_us"],
        sqlite_where=sa.text("posting_id IS NULL"),
        postgresql_where=sa.text("posting_id IS NULL"),
    )
    op.create_index("usage_events_by_posting", "usage_events", ["posting_id"])
    op.create_table(
        "usage_postings",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("merchant_id", Int64, nullable=False),
        sa.Column("customer_id", Int64, nullable=False),
        sa.Column("meter", sa.String(64), nullable=False),
        sa.Column("window_end_us", Int64, nullable=False),
        sa.Column("events", Int64, nullable=False),
        sa.Column("quantity", Int64, nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("funding", sa.String(16), nullable=False),
        sa.Column("transfer_id", Int64, nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.UniqueConstraint(
            "merchant_id", "customer_id", "meter", "window_end_us", name="usage_posting_per_window"
        ),
        sa.UniqueConstraint("transfer_id", name="usage_posting_transfer_once"),
        sa.CheckConstraint("amount_micros > 0 AND events > 0", name="usage_posting_positive"),
    )
    op.create_table(
        "subscription_plans",
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("plan_ref", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("price_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.CheckConstraint(
            "period IN ('daily', 'weekly', 'monthly', 'yearly')", name="plan_period_known"
        ),
        sa.CheckConstraint("price_micros > 0", name="plan_price_positive"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("customer_id", Int64, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("plan_ref", sa.String(128), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("price_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("anchor_date", sa.String(10), nullable=False),  # ISO local date
        sa.Column("period_number", Int64, nullable=False),  # of the last paid period
        sa.Column("period_starts_at_us", Int64, nullable=False),
        sa.Column("period_ends_at_us", Int64, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.Column("updated_at_us", Int64, nullable=False),
        sa.UniqueConstraint("merchant_id", "idempotency_key", name="subscription_idempotency_key"),
        sa.CheckConstraint(
            "state IN ('active', 'past_due', 'cancelled')", name="subscription_state_known"
        ),
        sa.CheckConstraint(
            "period_starts_at_us < period_ends_at_us", name="subscription_period_positive"
        ),
    )
    op.create_index(
        "subscriptions_due",
        "subscriptions",
        ["period_ends_at_us"],
        sqlite_where=sa.text("state <> 'cancelled'"),
        postgresql_where=sa.text("state <> 'cancelled'"),
    )
    op.create_table(
        "subscription_periods",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("subscription_id", Int64, sa.ForeignKey("subscriptions.id"), nullable=False),
        sa.Column("period_number", Int64, nullable=False),
        sa.Column("starts_at_us", Int64, nullable=False),
        sa.Column("ends_at_us", Int64, nullable=False),
        sa.Column("purchase_id", Int64, sa.ForeignKey("purchases.id"), nullable=False),
        sa.Column("transfer_id", Int64, nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.UniqueConstraint("subscription_id", "period_number", name="subscription_period_once"),
        sa.UniqueConstraint("subscription_id", "starts_at_us", name="subscription_start_once"),
        sa.CheckConstraint("starts_at_us < ends_at_us", name="subscription_period_length"),
    )


def downgrade() -> None:
    for table in (
        "subscription_periods",
        "subscriptions",
        "subscription_plans",
        "usage_postings",
        "usage_events",
        "meters",
        "tips",
        "tip_limits",
    ):
        op.drop_table(table)
