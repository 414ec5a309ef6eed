"""Processor events (each applied once), disputes, and the manual adjustments audit log.

Revision ID: 0005_events
Revises: 0002_payments

``processor_events`` and ``adjustments`` are append-only: the database refuses
UPDATE and DELETE (and TRUNCATE on PostgreSQL) with triggers, as for
``transfers`` in 0001. ``disputes`` moves from ``open`` to ``won``/``lost``
once, by a guarded UPDATE.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_events"
down_revision = "0002_payments"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Int64 = sa.BigInteger()
APPEND_ONLY = ("processor_events", "adjustments")


def upgrade() -> None:
    op.create_table(
        "processor_events",
        sa.Column("processor", sa.String(32), primary_key=True),
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("charge_ref", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("effect", sa.String(40), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("created_s", Int64, nullable=False),
        sa.Column("received_at_us", Int64, nullable=False),
        sa.CheckConstraint("status IN ('applied', 'ignored')", name="processor_event_status"),
    )
    op.create_table(
        "disputes",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("processor", sa.String(32), nullable=False),
        sa.Column("processor_dispute_id", sa.String(255), nullable=False),
        sa.Column("charge_id", Int64, sa.ForeignKey("charges.id"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("customer_micros", Int64, nullable=False),
        sa.Column("merchant_micros", Int64, nullable=False),
        sa.Column("loss_micros", Int64, nullable=False),
        sa.Column("fee_micros", Int64, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("opened_at_us", Int64, nullable=False),
        sa.Column("closed_at_us", Int64, nullable=True),
        sa.UniqueConstraint("processor", "processor_dispute_id", name="dispute_processor_id"),
        sa.CheckConstraint("status IN ('open', 'won', 'lost')", name="dispute_status_known"),
        sa.CheckConstraint(
            "amount_micros > 0 AND customer_micros >= 0 AND merchant_micros >= 0"
            " AND loss_micros >= 0 AND fee_micros >= 0",
            name="dispute_amounts",
        ),
        sa.CheckConstraint(
            "customer_micros + merchant_micros + loss_micros IN (0, amount_micros)",
            name="dispute_parts_sum",
        ),
    )
    op.create_table(
        "adjustments",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("account_id", Int64, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_micros", Int64, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("transfer_id", Int64, nullable=False, unique=True),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.CheckConstraint("amount_micros <> 0", name="adjustment_amount_nonzero"),
        sa.CheckConstraint(
            "length(reason) > 0 AND length(actor) > 0", name="adjustment_who_and_why"
        ),
    )
    op.create_index("adjustments_by_account", "adjustments", ["account_id", "created_at_us"])
    op.create_index("charges_by_processor_id", "charges", ["processor_charge_id"])
    _forbid_changes()


def _forbid_changes() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_append_only_{action.lower()} BEFORE {action}"
                    f" ON {table} BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )
        return
    op.execute(
        "CREATE FUNCTION micropay_events_append_only() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME"
        " USING ERRCODE = 'integrity_constraint_violation'; END $$"
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION micropay_events_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION micropay_events_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS micropay_events_append_only()")
    op.drop_index("charges_by_processor_id", table_name="charges")
    op.drop_index("adjustments_by_account", table_name="adjustments")
    for table in ("adjustments", "disputes", "processor_events"):
        op.drop_table(table)
