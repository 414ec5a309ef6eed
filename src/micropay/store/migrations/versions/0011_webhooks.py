"""Webhooks out: endpoints, the outbox of events, deliveries and their attempt log.

Revision ID: 0011_webhooks
Revises: 0010_merge
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_webhooks"
down_revision = "0010_merge"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Int64 = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        # 0: the platform's own endpoints (events of customers no merchant owns).
        sa.Column("merchant_id", Int64, nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("live", sa.Boolean, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("events", sa.Text, nullable=False),  # space-separated types, "*" for all
        sa.Column("disabled_reason", sa.Text, nullable=True),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.Column("updated_at_us", Int64, nullable=False),
        sa.CheckConstraint("secret LIKE 'whsec_%'", name="webhook_secret_prefix"),
    )
    op.create_index("webhook_endpoints_merchant", "webhook_endpoints", ["merchant_id"])
    # The outbox: written in the transaction of the change it reports.
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(40), primary_key=True),  # the webhook-id header
        sa.Column("merchant_id", Int64, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("object_id", Int64, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),  # the exact body sent
        sa.Column("created_at_us", Int64, nullable=False),
        # One event per (type, object): a change replayed in a retried transaction emits once.
        sa.UniqueConstraint("type", "object_id", name="webhook_event_once"),
    )
    op.create_index("webhook_events_merchant", "webhook_events", ["merchant_id", "created_at_us"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(40), sa.ForeignKey("webhook_events.id"), nullable=False),
        sa.Column("endpoint_id", Int64, sa.ForeignKey("webhook_endpoints.id"), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at_us", Int64, nullable=False),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_expires_at_us", Int64, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.Column("finished_at_us", Int64, nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'succeeded', 'failed', 'cancelled')",
            name="webhook_delivery_state",
        ),
        sa.CheckConstraint("attempts >= 0", name="webhook_delivery_attempts"),
        sa.CheckConstraint(
            "(lease_owner IS NULL) = (lease_expires_at_us IS NULL)", name="webhook_lease_whole"
        ),
        sa.UniqueConstraint("event_id", "endpoint_id", name="webhook_delivery_once"),
    )
    op.create_index("webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_at_us"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", Int64, sa.ForeignKey("webhook_deliveries.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),  # NULL: no HTTP answer
        sa.Column("latency_us", Int64, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("attempted_at_us", Int64, nullable=False),
    )
    op.create_index("webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "attempt"])


def downgrade() -> None:
    op.drop_index("webhook_attempts_delivery", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("webhook_events_merchant", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_index("webhook_endpoints_merchant", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
