"""Merge the gift cards, billing and processor events branches into one history.

Revision ID: 0006_merge
Revises: 0003_gift_cards, 0004_billing, 0005_events
"""

from __future__ import annotations

revision = "0006_merge"
down_revision = ("0003_gift_cards", "0004_billing", "0005_events")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
