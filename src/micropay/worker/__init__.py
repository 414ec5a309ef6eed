"""Durable scheduled work: jobs in the database, leased with timeouts (see ``jobs``)."""

from __future__ import annotations

from micropay.worker.jobs import (
    Job,
    JobSpec,
    Registry,
    RunOutcome,
    Worker,
    payments_registry,
    period_run_key,
)

__all__ = [
    "Job",
    "JobSpec",
    "Registry",
    "RunOutcome",
    "Worker",
    "payments_registry",
    "period_run_key",
]
