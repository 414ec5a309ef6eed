"""Payouts and revenue sharing: payees, platform fees, splits, sale shares, payouts, verification.

Revision ID: 0008_payouts
Revises: 0007_api
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_payouts"
down_revision = "0007_api"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Int64 = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "payees",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("public_id", sa.String(40), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("destination_token", sa.String(255), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("schedule", sa.String(8), nullable=False),
        sa.Column("threshold_micros", Int64, nullable=False),
        sa.Column("hold_s", Int64, nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.CheckConstraint("id > 0 AND id < 1073741824", name="payee_number_range"),
        sa.CheckConstraint(
            "schedule IN ('daily', 'weekly', 'monthly', 'manual')", name="payee_schedule"
        ),
        sa.CheckConstraint("threshold_micros > 0 AND hold_s >= 0", name="payee_terms"),
    )
    op.create_table(
        "platform_fees",
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("fee_bps", sa.Integer, nullable=False),
        sa.Column("fixed_micros", Int64, nullable=False),
        sa.CheckConstraint(
            "fee_bps >= 0 AND fee_bps <= 10000 AND fixed_micros >= 0", name="platform_fee_range"
        ),
    )
    op.create_table(
        "item_splits",
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("item_ref", sa.String(128), primary_key=True),
        sa.Column("payee_id", Int64, sa.ForeignKey("payees.id"), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("share_bps", sa.Integer, nullable=False),
        sa.CheckConstraint("share_bps > 0 AND share_bps <= 10000", name="split_share_range"),
    )
    op.create_table(
        "sales",
        sa.Column("purchase_id", Id, sa.ForeignKey("purchases.id"), primary_key=True),
        sa.Column("merchant_id", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("gross_micros", Int64, nullable=False),
        sa.Column("fee_micros", Int64, nullable=False),
        sa.Column("fee_reversed_micros", Int64, nullable=False),
        sa.Column("refunded_micros", Int64, nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.CheckConstraint(
            "fee_micros >= 0 AND fee_micros <= gross_micros"
            " AND fee_reversed_micros >= 0 AND fee_reversed_micros <= fee_micros"
            " AND refunded_micros >= 0 AND refunded_micros <= gross_micros",
            name="sale_amounts",
        ),
    )
    op.create_table(
        "sale_shares",
        sa.Column("purchase_id", Id, sa.ForeignKey("sales.purchase_id"), primary_key=True),
        sa.Column("payee_id", Int64, sa.ForeignKey("payees.id"), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("reversed_micros", Int64, nullable=False),
        sa.Column("release_at_us", Int64, nullable=False),
        sa.Column("released", sa.Boolean, nullable=False),
        sa.CheckConstraint(
            "amount_micros >= 0 AND reversed_micros >= 0 AND reversed_micros <= amount_micros",
            name="sale_share_amounts",
        ),
    )
    op.create_index(
        "sale_shares_due",
        "sale_shares",
        ["release_at_us"],
        sqlite_where=sa.text("released = 0"),
        postgresql_where=sa.text("released = false"),
    )
    op.create_table(
        "sale_reversals",
        sa.Column("refund_id", Id, primary_key=True, autoincrement=False),
        sa.Column("purchase_id", Int64, sa.ForeignKey("sales.purchase_id"), nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
    )
    op.create_table(
        "payouts",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("payee_id", Int64, sa.ForeignKey("payees.id"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("period_key", sa.String(64), nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("hold_transfer_id", Int64, nullable=False),
        sa.Column("processor_payout_id", sa.String(255), nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.Column("updated_at_us", Int64, nullable=False),
        sa.UniqueConstraint("payee_id", "purpose", "period_key", name="payout_once_per_period"),
        sa.CheckConstraint("amount_micros > 0", name="payout_amount_positive"),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'declined')", name="payout_status_known"
        ),
        sa.CheckConstraint("purpose IN ('earnings', 'micro_deposit')", name="payout_purpose"),
    )
    op.create_index(
        "payouts_pending",
        "payouts",
        ["created_at_us"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "payee_verifications",
        sa.Column("payee_id", Int64, sa.ForeignKey("payees.id"), primary_key=True),
        sa.Column("first_micros", Int64, nullable=False),
        sa.Column("second_micros", Int64, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.Column("updated_at_us", Int64, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'verified', 'locked')", name="verification_status"
        ),
        sa.CheckConstraint(
            "first_micros > 0 AND first_micros < 1000000"
            " AND second_micros > 0 AND second_micros < 1000000",
            name="verification_amounts_below_one_unit",
        ),
    )


def downgrade() -> None:
    op.drop_table("payee_verifications")
    op.drop_index("payouts_pending", table_name="payouts")
    op.drop_table("payouts")
    op.drop_table("sale_reversals")
    op.drop_index("sale_shares_due", table_name="sale_shares")
    op.drop_table("sale_shares")
    op.drop_table("sales")
    op.drop_table("item_splits")
    op.drop_table("platform_fees")
    op.drop_table("payees")
