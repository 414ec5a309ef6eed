"""SQLite adapter: the zero-configuration default store.

Durability settings are enforced at open and checked: WAL journal,
``synchronous=FULL`` (every commit is fsynced), and write transactions opened
with ``BEGIN IMMEDIATE`` so that two processes cannot both read a balance and
then both spend it. Busy errors become :class:`TransientStoreError` for the
service to retry.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from micropay.core import limits
from micropay.core.accounts import Account
from micropay.core.engine import CounterDelta
from micropay.core.netting import AccountState, NettedPlan, PlainOutcome
from micropay.core.transfers import Rejection, StoredTransfer
from micropay.service.ports import (
    Recorded,
    StoreError,
    TransientStoreError,
    UnsafeStoreSettings,
)
from micropay.store import sql
from micropay.store.payments_sql import PaymentsSql

_MAX = limits.amount_micros_max
# Parameters in AccountGuard order: ?1 account_id, ?2 currency, ?3 debits, ?4 credits.
_GUARDED_NETTED_UPDATE = f"""
UPDATE accounts SET debits_posted_micros = debits_posted_micros + ?3,
                    credits_posted_micros = credits_posted_micros + ?4
WHERE id = ?1 AND currency = ?2
  AND debits_pending_micros + debits_posted_micros <= {_MAX} - ?3
  AND credits_pending_micros + credits_posted_micros <= {_MAX} - ?4
  AND ((flags & 1) = 0 OR debits_pending_micros + debits_posted_micros
       - credits_posted_micros <= credit_limit_micros - ?3)
  AND ((flags & 2) = 0 OR credits_pending_micros + credits_posted_micros
       - debits_posted_micros <= credit_limit_micros - ?4)
"""
_IN_IDS = "IN (SELECT value FROM json_each(?))"
_POSTED_DELTA = (
    "UPDATE accounts SET debits_posted_micros = debits_posted_micros + ?,"
    " credits_posted_micros = credits_posted_micros + ? WHERE id = ?"
)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


class _SqliteReads(sql.SqlReader, PaymentsSql):
    def _select_in(self, head: str, column: str, ids: Collection[int]) -> list[Any]:
        where = " AND " if " WHERE " in head else " WHERE "
        self._cur.execute(f"{head}{where}{column} {_IN_IDS}", (json.dumps(list(ids)),))
        return self._cur.fetchall()

    def integrity_problems(self) -> list[str]:
        self._cur.execute("PRAGMA integrity_check")
        rows = [row[0] for row in self._cur.fetchall()]
        return [] if rows == ["ok"] else [f"sqlite integrity_check: {row}" for row in rows]


class SqliteWriteTx(_SqliteReads):
    def lock_accounts(self, ids: Collection[int]) -> dict[int, Account]:
        # BEGIN IMMEDIATE already holds the database's write lock.
        return self.get_accounts(ids)

    def lock_account_states(self, ids: Collection[int]) -> dict[int, AccountState]:
        # BEGIN IMMEDIATE already holds the database's write lock.
        if not ids:
            return {}
        rows = self._select_in(f"SELECT {sql.ACCOUNT_STATE_COLUMNS} FROM accounts", "id", ids)
        return {row[0]: row[1:] for row in rows}

    def load_recorded(self, ids: Collection[int]) -> Recorded:
        return self.get_recorded(ids)

    def load_resolutions(self, pending_ids: Collection[int]) -> dict[int, int]:
        if not pending_ids:
            return {}
        rows = self._select_in(
            "SELECT pending_id, flags FROM transfers"
            " WHERE pending_id IS NOT NULL AND rejected_status IS NULL",
            "pending_id",
            pending_ids,
        )
        return {row[0]: row[1] for row in rows}

    def insert_accounts(self, accounts: Sequence[Account]) -> None:
        self._cur.executemany(sql.INSERT_ACCOUNT, [sql.account_row(a) for a in accounts])

    def insert_transfers(self, transfers: Sequence[StoredTransfer]) -> None:
        self._cur.executemany(sql.INSERT_TRANSFER, [sql.transfer_row(t) for t in transfers])

    def insert_rejections(self, rejections: Sequence[Rejection]) -> None:
        self._cur.executemany(sql.INSERT_TRANSFER, [sql.rejection_row(r) for r in rejections])

    def apply_deltas(self, deltas: Mapping[int, CounterDelta]) -> None:
        self._cur.executemany(sql.APPLY_DELTA, sql.delta_rows(deltas))

    def try_netted(self, plan: NettedPlan) -> bool:
        cur = self._cur
        cur.executemany(_GUARDED_NETTED_UPDATE, plan.guards)  # guards are parameter tuples
        if cur.rowcount != len(plan.guards):
            return False
        try:
            cur.executemany(sql.INSERT_NETTED_TRANSFER, plan.rows)
        except sqlite3.IntegrityError:
            return False  # an id is taken: the exact path replays or rejects it
        return True

    def try_plain(self, outcome: PlainOutcome) -> bool:
        cur = self._cur
        try:
            if outcome.accepted:
                cur.executemany(sql.INSERT_NETTED_TRANSFER, outcome.accepted)
            if outcome.rejected:
                cur.executemany(sql.INSERT_PLAIN_REJECTION, outcome.rejected)
        except sqlite3.IntegrityError:
            return False  # an id is taken: the exact path replays or rejects it
        # Plain transfers change posted counters only.
        cur.executemany(
            _POSTED_DELTA,
            [
                (d.debits_posted_micros, d.credits_posted_micros, account_id)
                for account_id, d in outcome.deltas.items()
            ],
        )
        return True


_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _process_write_lock(path: str) -> threading.Lock:
    """The lock this process's writers of the database file ``path`` share."""
    key = path if path == ":memory:" else os.path.realpath(path)
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.Lock())


class SqliteStore:
    """One connection to a SQLite database file. Not shared between threads at once."""

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._write_lock = _process_write_lock(path)
        try:
            self._conn = sqlite3.connect(
                path,
                isolation_level=None,
                check_same_thread=False,
                timeout=limits.sqlite_busy_timeout_ms / 1000,
                cached_statements=256,
            )
        except sqlite3.Error as error:
            raise StoreError(f"cannot open sqlite database: {error}") from None
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA busy_timeout={limits.sqlite_busy_timeout_ms}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self.check_durability()
        except sqlite3.Error as error:
            self._conn.close()
            raise StoreError(f"cannot open sqlite database: {error}") from None
        except BaseException:
            self._conn.close()
            raise

    def check_durability(self) -> None:
        """Refuse settings under which an acknowledged write could be lost."""
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = self._conn.execute("PRAGMA synchronous").fetchone()[0]
        if str(mode).lower() != "wal":
            raise UnsafeStoreSettings(f"sqlite journal_mode is {mode}, need wal")
        if synchronous < 2:
            raise UnsafeStoreSettings(
                f"sqlite synchronous is {synchronous}, need FULL (2) or EXTRA (3)"
            )

    @contextmanager
    def write(self) -> Iterator[SqliteWriteTx]:
        conn = self._conn
        # Threads of this process queue on a lock rather than in SQLite's busy
        # handler, which sleeps in growing steps (up to 100 ms) and wakes late.
        lock = self._write_lock
        if not lock.acquire(timeout=limits.sqlite_busy_timeout_ms / 1000):
            raise TransientStoreError("sqlite: timed out waiting for this process's writers")
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                if _is_busy(error):
                    raise TransientStoreError(str(error)) from None
                raise StoreError(str(error)) from None
            yield from self._write_body(conn)
        finally:
            lock.release()

    def _write_body(self, conn: sqlite3.Connection) -> Iterator[SqliteWriteTx]:
        try:
            yield SqliteWriteTx(conn.cursor())
            conn.execute("COMMIT")
        except BaseException as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(error, sqlite3.OperationalError) and _is_busy(error):
                raise TransientStoreError(str(error)) from None
            if isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error):
                # As on PostgreSQL: another process took the key first (an id
                # collision or a concurrent duplicate); the retry sees it.
                raise TransientStoreError(str(error)) from None
            if isinstance(error, sqlite3.Error):
                raise StoreError(f"sqlite: {error}") from None
            raise

    @contextmanager
    def read(self) -> Iterator[_SqliteReads]:
        conn = self._conn
        conn.execute("BEGIN")
        try:
            yield _SqliteReads(conn.cursor())
        except sqlite3.Error as error:
            raise StoreError(f"sqlite: {error}") from None
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def execute_raw(self, statement: str, rows: Sequence[Sequence[object]] = ()) -> int:
        """Plain SQL for benchmarks' raw baseline and tests; returns the row count."""
        cur = self._conn.cursor()
        if rows:
            cur.executemany(statement, rows)
        else:
            cur.execute(statement)
        return cur.rowcount

    def close(self) -> None:
        self._conn.close()
