"""Merge the payouts and jobs branches into one history.

Revision ID: 0010_merge
Revises: 0008_payouts, 0009_jobs
"""

from __future__ import annotations

revision = "0010_merge"
down_revision = ("0008_payouts", "0009_jobs")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
