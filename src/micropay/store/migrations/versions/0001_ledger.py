"""The ledger: accounts and transfers.

Revision ID: 0001_ledger
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_ledger"
down_revision = None
branch_labels = None
depends_on = None

# Signed 64-bit integers everywhere. On SQLite the primary keys are declared
# INTEGER so they alias the rowid (the fastest key SQLite has).
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Int64 = sa.BigInteger()
INT64_MAX = 2**63 - 1


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("owner_ref", sa.String(128), nullable=False, server_default=""),
        sa.Column("flags", sa.Integer, nullable=False),
        sa.Column("credit_limit_micros", Int64, nullable=False, server_default="0"),
        sa.Column("debits_pending_micros", Int64, nullable=False, server_default="0"),
        sa.Column("debits_posted_micros", Int64, nullable=False, server_default="0"),
        sa.Column("credits_pending_micros", Int64, nullable=False, server_default="0"),
        sa.Column("credits_posted_micros", Int64, nullable=False, server_default="0"),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.CheckConstraint("id > 0", name="account_id_positive"),
        sa.CheckConstraint("flags IN (0, 1, 2)", name="account_flags_known"),
        sa.CheckConstraint("length(currency) = 3", name="account_currency_code"),
        sa.CheckConstraint("credit_limit_micros >= 0", name="account_credit_limit"),
        sa.CheckConstraint(
            "debits_pending_micros >= 0 AND debits_posted_micros >= 0"
            " AND credits_pending_micros >= 0 AND credits_posted_micros >= 0",
            name="account_counters_nonnegative",
        ),
        # The balance rules, as the database's last line of defence.
        sa.CheckConstraint(
            "(flags & 1) = 0 OR debits_pending_micros + debits_posted_micros"
            " - credits_posted_micros <= credit_limit_micros",
            name="account_debits_must_not_exceed_credits",
        ),
        sa.CheckConstraint(
            "(flags & 2) = 0 OR credits_pending_micros + credits_posted_micros"
            " - debits_posted_micros <= credit_limit_micros",
            name="account_credits_must_not_exceed_debits",
        ),
    )
    # Every attempt with a valid id: transfers that took effect
    # (rejected_status IS NULL) and remembered failures (rejected_status set,
    # no effect). One table, so the primary key alone makes an id unique
    # across both, even for concurrent writers.
    op.create_table(
        "transfers",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("debit_account_id", Int64, nullable=False),
        sa.Column("credit_account_id", Int64, nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("code", sa.Integer, nullable=False),
        sa.Column("flags", sa.Integer, nullable=False),
        sa.Column("pending_id", Int64, nullable=True),
        sa.Column("timeout_s", Int64, nullable=False),
        sa.Column("expires_at_us", Int64, nullable=True),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.Column("rejected_status", sa.String(64), nullable=True),
        sa.CheckConstraint("id > 0", name="transfer_id_positive"),
        sa.CheckConstraint(
            "rejected_status IS NOT NULL OR (amount_micros > 0"
            " AND debit_account_id <> credit_account_id AND debit_account_id > 0"
            " AND credit_account_id > 0)",
            name="transfer_effect_well_formed",
        ),
    )
    # A hold is resolved (posted, voided or expired) at most once.
    op.create_index(
        "transfers_one_resolution_per_hold",
        "transfers",
        ["pending_id"],
        unique=True,
        sqlite_where=sa.text("pending_id IS NOT NULL AND rejected_status IS NULL"),
        postgresql_where=sa.text("pending_id IS NOT NULL AND rejected_status IS NULL"),
    )
    op.create_index(
        "transfers_hold_expiry",
        "transfers",
        ["expires_at_us"],
        sqlite_where=sa.text("expires_at_us IS NOT NULL"),
        postgresql_where=sa.text("expires_at_us IS NOT NULL"),
    )
    _forbid_changes_to_transfers()


def _forbid_changes_to_transfers() -> None:
    """Transfers are immutable: the database refuses UPDATE, DELETE (and TRUNCATE)."""
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER transfers_immutable_{action.lower()} BEFORE {action}"
                " ON transfers BEGIN SELECT RAISE(ABORT, 'transfers are immutable'); END"
            )
        return
    op.execute(
        "CREATE FUNCTION micropay_transfers_immutable() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'transfers are immutable'"
        " USING ERRCODE = 'integrity_constraint_violation'; END $$"
    )
    op.execute(
        "CREATE TRIGGER transfers_immutable BEFORE UPDATE OR DELETE ON transfers"
        " FOR EACH ROW EXECUTE FUNCTION micropay_transfers_immutable()"
    )
    op.execute(
        "CREATE TRIGGER transfers_immutable_truncate BEFORE TRUNCATE ON transfers"
        " FOR EACH STATEMENT EXECUTE FUNCTION micropay_transfers_immutable()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS transfers_immutable_truncate ON transfers")
        op.execute("DROP TRIGGER IF EXISTS transfers_immutable ON transfers")
        op.execute("DROP FUNCTION IF EXISTS micropay_transfers_immutable()")
    op.drop_table("transfers")
    op.drop_table("accounts")
