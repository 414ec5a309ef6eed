"""SQL of the durable job runner (``micropay.worker``): the ``jobs`` table.

A mixin for the adapters' transaction classes (like :class:`PaymentsSql`): it
uses their cursor (``self._cur``) and placeholder rewriting (``self._sql``).
Until it is mixed into ``PaymentsSql``, :func:`micropay.worker.jobs.jobs_tx`
binds it to a transaction's cursor.

Every state change is a guarded UPDATE: a job is claimed only while it is
pending, due, under its attempt limit and not leased (or its lease expired);
it is finished or released only by the lease's owner. On PostgreSQL the
claim's candidate rows are taken ``FOR UPDATE SKIP LOCKED`` so racing workers
pass over each other's rows instead of queueing on them; on SQLite the write
transaction (``BEGIN IMMEDIATE``) already serializes claims.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from micropay.store.sql import Cursor

JOB_COLUMNS = (
    "run_key, name, payload, state, due_at_us, lease_owner, lease_expires_at_us,"
    " attempts, attempts_max, last_error, created_at_us, finished_at_us"
)


@dataclass(frozen=True, slots=True)
class JobRow:
    run_key: str
    name: str
    payload: str  # JSON object
    state: str  # pending | done | failed
    due_at_us: int
    lease_owner: str | None
    lease_expires_at_us: int | None
    attempts: int
    attempts_max: int
    last_error: str | None
    created_at_us: int
    finished_at_us: int | None


def _job(r: Sequence[Any]) -> JobRow:
    return JobRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11])


def _marks(count: int) -> str:
    return ",".join("?" * count)


class JobsSql:
    _cur: Cursor

    def _sql(self, text: str) -> str:
        return text

    def _jobs_on_postgres(self) -> bool:
        return self._sql("?") != "?"

    def enqueue_job(
        self, run_key: str, name: str, payload: str, due_at_us: int, attempts_max: int, now_us: int
    ) -> bool:
        """Insert a pending job; False (and nothing changed) if the run key exists."""
        self._cur.execute(
            self._sql(
                f"INSERT INTO jobs ({JOB_COLUMNS})"
                " VALUES (?,?,?,'pending',?,NULL,NULL,0,?,NULL,?,NULL)"
                " ON CONFLICT (run_key) DO NOTHING"
            ),
            (run_key, name, payload, due_at_us, attempts_max, now_us),
        )
        return self._cur.rowcount == 1

    def get_job(self, run_key: str) -> JobRow | None:
        self._cur.execute(
            self._sql(f"SELECT {JOB_COLUMNS} FROM jobs WHERE run_key = ?"), (run_key,)
        )
        rows = self._cur.fetchall()
        return _job(rows[0]) if rows else None

    def list_jobs(self, limit: int, state: str | None = None) -> list[JobRow]:
        where = "" if state is None else " WHERE state = ?"
        params: tuple[object, ...] = (limit,) if state is None else (state, limit)
        self._cur.execute(
            self._sql(f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY due_at_us, run_key LIMIT ?"),
            params,
        )
        return [_job(r) for r in self._cur.fetchall()]

    def fail_exhausted_jobs(self, now_us: int) -> int:
        """Jobs whose last allowed attempt died with its lease: failed, not claimable forever."""
        self._cur.execute(
            self._sql(
                "UPDATE jobs SET state = 'failed', lease_owner = NULL, lease_expires_at_us = NULL,"
                " finished_at_us = ?,"
                " last_error = COALESCE(last_error, 'the lease of the last attempt expired')"
                " WHERE state = 'pending' AND attempts >= attempts_max"
                " AND lease_expires_at_us IS NOT NULL AND lease_expires_at_us <= ?"
            ),
            (now_us, now_us),
        )
        return self._cur.rowcount

    def claim_due_job(
        self, owner: str, now_us: int, lease_until_us: int, names: Collection[str]
    ) -> JobRow | None:
        """Lease the most overdue claimable job among ``names`` to ``owner``; counts an attempt."""
        if not names:
            return None
        names = sorted(names)
        guard = (
            "state = 'pending' AND due_at_us <= ? AND attempts < attempts_max"
            " AND (lease_expires_at_us IS NULL OR lease_expires_at_us <= ?)"
            f" AND name IN ({_marks(len(names))})"
        )
        lock = " FOR UPDATE SKIP LOCKED" if self._jobs_on_postgres() else ""
        self._cur.execute(
            self._sql(
                "UPDATE jobs SET lease_owner = ?, lease_expires_at_us = ?, attempts = attempts + 1"
                f" WHERE run_key = (SELECT run_key FROM jobs WHERE {guard}"
                f" ORDER BY due_at_us, run_key LIMIT 1{lock})"
                # The guard again: on PostgreSQL it is re-checked on the latest row version.
                f" AND {guard}"
                f" RETURNING {JOB_COLUMNS}"
            ),
            (owner, lease_until_us, now_us, now_us, *names, now_us, now_us, *names),
        )
        rows = self._cur.fetchall()
        return _job(rows[0]) if rows else None

    def set_job_lease(self, run_key: str, owner: str, lease_until_us: int) -> bool:
        """Move the lease's expiry (extend or shorten); False if ``owner`` does not hold it."""
        self._cur.execute(
            self._sql(
                "UPDATE jobs SET lease_expires_at_us = ?"
                " WHERE run_key = ? AND state = 'pending' AND lease_owner = ?"
            ),
            (lease_until_us, run_key, owner),
        )
        return self._cur.rowcount == 1

    def finish_job(self, run_key: str, owner: str, now_us: int) -> bool:
        """Mark done; False if ``owner`` no longer holds the lease (then roll back)."""
        self._cur.execute(
            self._sql(
                "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_at_us = NULL,"
                " finished_at_us = ?, last_error = NULL"
                " WHERE run_key = ? AND state = 'pending' AND lease_owner = ?"
            ),
            (now_us, run_key, owner),
        )
        return self._cur.rowcount == 1

    def release_failed_job(
        self, run_key: str, owner: str, error: str, retry_at_us: int, now_us: int
    ) -> str | None:
        """Record a failed attempt: retry at ``retry_at_us``, or ``failed`` after the last one.

        Returns the new state, or None if ``owner`` no longer holds the lease.
        """
        self._cur.execute(
            self._sql(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at_us = NULL, last_error = ?,"
                " due_at_us = CASE WHEN attempts >= attempts_max THEN due_at_us ELSE ? END,"
                " finished_at_us = CASE WHEN attempts >= attempts_max THEN ? ELSE NULL END,"
                " state = CASE WHEN attempts >= attempts_max THEN 'failed' ELSE 'pending' END"
                " WHERE run_key = ? AND state = 'pending' AND lease_owner = ?"
                " RETURNING state"
            ),
            (error, retry_at_us, now_us, run_key, owner),
        )
        rows = self._cur.fetchall()
        return str(rows[0][0]) if rows else None
