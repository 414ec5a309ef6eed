"""Durable jobs: scheduled work identified by a unique run key, leased with timeouts.

Revision ID: 0009_jobs
Revises: 0007_api
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_jobs"
down_revision = "0007_api"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "jobs",
        # The run key identifies one run of scheduled work ("expire_holds:2026-01-01T00:05Z"):
        # enqueueing it again is a no-op.
        sa.Column("run_key", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("due_at_us", Int64, nullable=False),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_expires_at_us", Int64, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("attempts_max", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at_us", Int64, nullable=False),
        sa.Column("finished_at_us", Int64, nullable=True),
        sa.CheckConstraint("state IN ('pending', 'done', 'failed')", name="job_state"),
        sa.CheckConstraint("attempts >= 0 AND attempts_max >= 1", name="job_attempts"),
        sa.CheckConstraint(
            "(lease_owner IS NULL) = (lease_expires_at_us IS NULL)", name="job_lease_whole"
        ),
        sa.CheckConstraint(
            "state = 'pending' OR lease_owner IS NULL", name="job_lease_only_while_pending"
        ),
    )
    op.create_index("jobs_due", "jobs", ["state", "due_at_us"])


def downgrade() -> None:
    op.drop_index("jobs_due", table_name="jobs")
    op.drop_table("jobs")
