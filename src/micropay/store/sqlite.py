"""SQLite adapter: the zero-configuration default store.

Durability settings are enforced at open and checked: WAL journal,
``synchronous=FULL`` (every commit is fsynced), and write transactions opened
with ``BEGIN IMMEDIATE`` so that two processes cannot both read a balance and
then both spend it. Busy errors become :class:`TransientStoreError` for the
service to retry.

Each connection keeps the account states the plain and netted paths wrote or
read (:class:`_AccountStateCache`), so that the plain path need not read them
again next batch. The cache holds what is committed, and only while nothing
else can have changed it: it is checked after ``BEGIN IMMEDIATE`` (with the
write lock held) against ``PRAGMA data_version`` (other connections' commits)
and the connection's own ``total_changes`` (any other write on this
connection), and it is updated only after a ``COMMIT`` whose row changes are
exactly those of the cache-aware writes. Anything else empties it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from micropay.core import limits
from micropay.core.accounts import Account
from micropay.core.engine import CounterDelta
from micropay.core.netting import NETTED_ROW_FIELDS, AccountState, NettedPlan, PlainOutcome
from micropay.core.statuses import TransferStatus
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
# A plain transfer's remembered failure, one statement per status: the
# status is a constant of the statement (the values are fixed identifiers).
_INSERT_REJECTED_AS = {
    status.value: (
        f"INSERT INTO transfers ({', '.join(NETTED_ROW_FIELDS)}, rejected_status,"
        " pending_id, timeout_s, expires_at_us)"
        f" VALUES ({','.join('?' * len(NETTED_ROW_FIELDS))}, '{status.value}', NULL, 0, NULL)"
    )
    for status in TransferStatus
    if status.value.replace("_", "").isalpha()
}


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


class _AccountStateCache:
    """Committed account states of one connection, valid while ``stamp`` is unchanged.

    ``stamp`` is ``(PRAGMA data_version, total_changes)`` as of the last time
    the cache was known to match the database; ``None`` when it is not.
    """

    __slots__ = ("stamp", "states")

    def __init__(self) -> None:
        self.states: dict[int, AccountState] = {}
        self.stamp: tuple[int, int] | None = None

    def clear(self) -> None:
        self.states = {}
        self.stamp = None


class SqliteWriteTx(_SqliteReads):
    """One write transaction; it records what its cache-aware writes did to accounts.

    The cache-aware methods are ``lock_account_states``, ``try_netted`` and
    ``try_plain``. The store applies what they recorded to its cache after
    ``COMMIT``, and only if the transaction changed no other row.
    """

    def __init__(
        self, cursor: sqlite3.Cursor, cache: _AccountStateCache, version: Callable[[], int]
    ) -> None:
        super().__init__(cursor)
        self._cache = cache
        self._version = version
        # ``PRAGMA data_version`` read in this transaction, when the cache had no
        # stamp and this transaction loads states into it (None: not read).
        self.version: int | None = None
        # States read from the database in this transaction, before any write.
        self.loaded: dict[int, AccountState] = {}
        # Posted counter changes as (debits, credits, account id), and the row
        # changes (inserts and updates) the cache-aware writes made.
        self.posted: list[Sequence[int]] = []
        self.changes_expected = 0
        self.cacheable = True

    def lock_accounts(self, ids: Collection[int]) -> dict[int, Account]:
        # BEGIN IMMEDIATE already holds the database's write lock.
        return self.get_accounts(ids)

    def lock_account_states(self, ids: Collection[int]) -> dict[int, AccountState]:
        # BEGIN IMMEDIATE already holds the database's write lock, and the
        # cache holds what is committed (the store checked it after BEGIN).
        if not ids:
            return {}
        cached = self._cache.states
        try:
            return dict(zip(ids, map(cached.__getitem__, ids), strict=True))
        except KeyError:
            pass  # some are not cached: read those
        states = {i: cached[i] for i in ids if i in cached}
        missing = [i for i in ids if i not in states]
        rows = self._select_in(f"SELECT {sql.ACCOUNT_STATE_COLUMNS} FROM accounts", "id", missing)
        loaded = {row[0]: row[1:] for row in rows}
        if self.changes_expected:
            self.cacheable = False  # read after this transaction's own writes
        else:
            self.loaded.update(loaded)
            if self._cache.stamp is None and self.version is None:
                # What these states are as of; any time in the transaction will
                # do, as no other connection can commit until it ends.
                self.version = self._version()
        states.update(loaded)
        return states

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
        # In any order: BEGIN IMMEDIATE already holds the database's write lock.
        guards = plan.guard_rows()
        cur.executemany(_GUARDED_NETTED_UPDATE, guards)
        if cur.rowcount != len(guards):
            return False
        try:
            cur.executemany(sql.INSERT_NETTED_TRANSFER, plan.rows)
        except sqlite3.IntegrityError:
            return False  # an id is taken: the exact path replays or rejects it
        self.changes_expected += len(guards) + len(plan.rows)
        if self._cache.states or self.loaded:  # else there is no cached state to update
            self.posted.extend(map(_guard_posted, guards))
        return True

    def try_plain(self, outcome: PlainOutcome) -> bool:
        cur = self._cur
        try:
            if outcome.accepted:
                cur.executemany(sql.INSERT_NETTED_TRANSFER, outcome.accepted)
            rejected = outcome.rejected_rows
            if rejected:
                statuses = set(outcome.rejected_statuses)
                # Usually one status: one statement, and the rows as they are.
                statement = _INSERT_REJECTED_AS.get(statuses.pop()) if len(statuses) == 1 else None
                if statement is not None:
                    cur.executemany(statement, rejected)
                else:
                    cur.executemany(sql.INSERT_PLAIN_REJECTION, outcome.rejected)
        except sqlite3.IntegrityError:
            return False  # an id is taken: the exact path replays or rejects it
        # Plain transfers change posted counters only.
        posted = outcome.posted
        if posted:
            cur.executemany(_POSTED_DELTA, posted)
        self.changes_expected += len(outcome.accepted) + len(rejected) + len(posted)
        self.posted.extend(posted)
        return True


_guard_posted = itemgetter(2, 3, 0)  # (debits, credits, account id)


def _only_cache_aware_writes(expected: int, made: int) -> bool:
    """Whether a connection's ``made`` row changes are the ``expected`` cache-aware ones.

    ``total_changes`` counts every row this connection inserts, updates or
    deletes, by any statement (triggers included): a difference is a write
    the cache did not see.
    """
    return made == expected


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
        self._cache = _AccountStateCache()
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
        cache = self._cache
        try:
            start = self._check_cache(conn, cache)
            tx = SqliteWriteTx(conn.cursor(), cache, lambda: self._data_version(conn))
            yield tx
            conn.execute("COMMIT")
        except BaseException as error:
            cache.clear()
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
        self._update_cache(conn, cache, start, tx)

    def _data_version(self, conn: sqlite3.Connection) -> int:
        """``PRAGMA data_version``: changes when another connection commits, not this one."""
        version: int = conn.execute("PRAGMA data_version").fetchone()[0]
        return version

    def _check_cache(self, conn: sqlite3.Connection, cache: _AccountStateCache) -> int:
        """Empty the cache unless nothing changed the database since it was stamped.

        Called with the write lock held (after ``BEGIN IMMEDIATE``), so no other
        writer can commit until this transaction ends. Returns ``total_changes``.
        An empty cache has nothing to check: writers that never fill it (the
        payment models, the API, batches that pass the netted guards) pay no
        ``PRAGMA`` per transaction.
        """
        changes = conn.total_changes
        if not cache.states:
            cache.stamp = None
            return changes
        version = self._data_version(conn)
        stamp = cache.stamp
        if (
            stamp is None
            or version != stamp[0]  # another connection committed
            or not _only_cache_aware_writes(0, changes - stamp[1])  # this one wrote elsewhere
        ):
            cache.states = {}
        cache.stamp = (version, changes)
        return changes

    def _update_cache(
        self, conn: sqlite3.Connection, cache: _AccountStateCache, start: int, tx: SqliteWriteTx
    ) -> None:
        """After COMMIT: apply the transaction's cache-aware writes, or empty the cache.

        Kept only if the rows the transaction changed are exactly those its
        cache-aware writes account for; any other write (accounts opened,
        the exact path, payments, holds) empties it.
        """
        changes = conn.total_changes
        version = cache.stamp[0] if cache.stamp is not None else tx.version
        if (
            version is None
            or not tx.cacheable
            or not _only_cache_aware_writes(tx.changes_expected, changes - start)
        ):
            cache.clear()
            return
        states = cache.states
        if tx.loaded:
            if len(states) + len(tx.loaded) > limits.cached_account_states_max:
                states.clear()
            states.update(tx.loaded)
        get = states.get
        for debits_posted, credits_posted, account_id in tx.posted:
            state = get(account_id)
            if state is not None:
                currency, flags, limit, dp, dpo, cp, cpo = state
                states[account_id] = (
                    currency,
                    flags,
                    limit,
                    dp,
                    dpo + debits_posted,
                    cp,
                    cpo + credits_posted,
                )
        # The data version read inside the transaction: our own commit does not
        # change it, and reading it again now could take in another writer's commit.
        cache.stamp = (version, changes)

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
