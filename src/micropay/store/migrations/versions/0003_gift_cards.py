"""Gift cards, vouchers and merchant store credit: batches, cards, redemptions, attempts.

Revision ID: 0003_gift_cards
Revises: 0002_payments

A card's code is never stored, only its hash (unique: the lookup key). A card's
remaining value is not stored either: it is the balance of the card's own
ledger account, whose owner id is the card's number (hence 1..2**36-1).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_gift_cards"
down_revision = "0002_payments"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Int64 = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "gift_card_batches",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("value_micros", Int64, nullable=False),
        sa.Column("card_count", sa.Integer, nullable=False),
        sa.Column("expires_at_us", Int64, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        # One key space per issuer: merchant_id 0 is the platform.
        sa.Column("issuer_id", Int64, nullable=False),
        sa.UniqueConstraint("issuer_id", "idempotency_key", name="gift_card_batch_key"),
        sa.CheckConstraint("kind IN ('platform', 'store_credit')", name="gift_card_batch_kind"),
        sa.CheckConstraint("value_micros > 0", name="gift_card_batch_value_positive"),
        sa.CheckConstraint("card_count > 0", name="gift_card_batch_count_positive"),
    )
    op.create_table(
        "gift_cards",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("batch_id", Int64, sa.ForeignKey("gift_card_batches.id"), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("merchant_id", Int64, sa.ForeignKey("merchants.id"), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("value_micros", Int64, nullable=False),
        sa.Column("expires_at_us", Int64, nullable=False),  # 0: never
        sa.Column("expired", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("breakage_transfer_id", Int64, nullable=True),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.CheckConstraint("id > 0 AND id < 68719476736", name="gift_card_number_range"),
        sa.CheckConstraint("kind IN ('platform', 'store_credit')", name="gift_card_kind"),
        sa.CheckConstraint(
            "(kind = 'store_credit') = (merchant_id IS NOT NULL)", name="gift_card_issuer"
        ),
        sa.CheckConstraint("value_micros > 0", name="gift_card_value_positive"),
    )
    op.create_index(
        "gift_cards_expiring",
        "gift_cards",
        ["expires_at_us"],
        sqlite_where=sa.text("expires_at_us > 0 AND NOT expired"),
        postgresql_where=sa.text("expires_at_us > 0 AND NOT expired"),
    )
    op.create_table(
        "gift_card_redemptions",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("card_id", Int64, sa.ForeignKey("gift_cards.id"), nullable=False),
        sa.Column("actor", sa.String(16), nullable=False),  # customer | merchant
        sa.Column("actor_id", Int64, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("remaining_micros", Int64, nullable=False),  # left on the card after it
        sa.Column("credit_account_id", Int64, nullable=False),
        sa.Column("transfer_id", Int64, nullable=False, unique=True),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.UniqueConstraint(
            "actor", "actor_id", "idempotency_key", name="gift_card_redemption_key"
        ),
        sa.CheckConstraint("actor IN ('customer', 'merchant')", name="gift_card_actor"),
        sa.CheckConstraint("amount_micros > 0", name="gift_card_redemption_positive"),
    )
    op.create_index("gift_card_redemptions_by_card", "gift_card_redemptions", ["card_id"])
    op.create_table(
        "gift_card_attempts",
        sa.Column("actor", sa.String(16), primary_key=True),
        sa.Column("actor_id", Int64, primary_key=True),
        sa.Column("window_start_us", Int64, primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.CheckConstraint("failures > 0", name="gift_card_attempt_failures_positive"),
    )


def downgrade() -> None:
    for table in ("gift_card_attempts", "gift_card_redemptions", "gift_cards", "gift_card_batches"):
        op.drop_table(table)
