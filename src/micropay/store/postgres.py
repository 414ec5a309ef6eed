"""PostgreSQL adapter (psycopg 3): the production store.

READ COMMITTED with explicit row locks taken in account-id order, so
concurrent batches cannot deadlock on accounts and a guarded UPDATE re-checks
its condition on the latest row version. Serialization failures, deadlocks
and concurrent duplicate ids become :class:`TransientStoreError`; the service
retries the whole operation a bounded number of times. Refuses to start when
``fsync`` or ``synchronous_commit`` is off.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors

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
_TRANSIENT = (
    errors.SerializationFailure,
    errors.DeadlockDetected,
    errors.UniqueViolation,
    errors.LockNotAvailable,
)
_LOCK_ACCOUNTS = "SELECT id FROM accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
_GUARDED_NETTED_UPDATE = f"""
UPDATE accounts a SET debits_posted_micros = a.debits_posted_micros + g.d,
                      credits_posted_micros = a.credits_posted_micros + g.c
FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::bigint[]) AS g(id, currency, d, c)
WHERE a.id = g.id AND a.currency = g.currency
  AND a.debits_pending_micros + a.debits_posted_micros <= {_MAX} - g.d
  AND a.credits_pending_micros + a.credits_posted_micros <= {_MAX} - g.c
  AND ((a.flags & 1) = 0 OR a.debits_pending_micros + a.debits_posted_micros
       - a.credits_posted_micros <= a.credit_limit_micros - g.d)
  AND ((a.flags & 2) = 0 OR a.credits_pending_micros + a.credits_posted_micros
       - a.debits_posted_micros <= a.credit_limit_micros - g.c)
"""
_APPLY_DELTAS = """
UPDATE accounts a SET debits_pending_micros = a.debits_pending_micros + d.dp,
                      debits_posted_micros = a.debits_posted_micros + d.dpo,
                      credits_pending_micros = a.credits_pending_micros + d.cp,
                      credits_posted_micros = a.credits_posted_micros + d.cpo
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
     AS d(dp, dpo, cp, cpo, id)
WHERE a.id = d.id
"""
# Deadlocks are avoided by taking row locks in id order, as the exact path's
# _LOCK_ACCOUNTS does. The netted update takes them itself, without a separate
# locking pass (which costs a quarter of the update): with hash and merge joins
# off for its transaction, the join is a nested loop driven by the unnest of
# the guards, which the plan sorts by account id, so rows are locked and
# updated in that order. The order is a performance property, not a
# correctness one: should a plan ever differ, a deadlock is detected by the
# server and retried like any other.
_ORDERED_JOIN = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
COPY_TRANSFERS = f"COPY transfers ({sql.TRANSFER_COLUMNS}) FROM STDIN"
COPY_ACCOUNTS = f"COPY accounts ({sql.ACCOUNT_COLUMNS}) FROM STDIN"


class _PgReads(sql.SqlReader, PaymentsSql):
    def _sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def _select_in(self, head: str, column: str, ids: Collection[int]) -> list[Any]:
        where = " AND " if " WHERE " in head else " WHERE "
        self._cur.execute(f"{head}{where}{column} = ANY(%s)", (list(ids),))
        return self._cur.fetchall()

    def integrity_problems(self) -> list[str]:
        self._cur.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid IN"
            " ('accounts'::regclass, 'transfers'::regclass) AND NOT convalidated"
        )
        problems = [f"constraint {row[0]} is not validated" for row in self._cur.fetchall()]
        self._cur.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'transfers'::regclass"
            " AND NOT tgisinternal AND tgenabled = 'D'"
        )
        problems += [f"trigger {row[0]} is disabled" for row in self._cur.fetchall()]
        self._cur.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid IN"
            " ('accounts'::regclass, 'transfers'::regclass) AND NOT indisvalid"
        )
        problems += [f"index {row[0]} is invalid" for row in self._cur.fetchall()]
        return problems


class PgWriteTx(_PgReads):
    def lock_accounts(self, ids: Collection[int]) -> dict[int, Account]:
        if not ids:
            return {}
        self._cur.execute(
            f"SELECT {sql.ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (sorted(ids),),
        )
        return {row[0]: sql.account_from_row(row) for row in self._cur.fetchall()}

    def lock_account_states(self, ids: Collection[int]) -> dict[int, AccountState]:
        if not ids:
            return {}
        self._cur.execute(
            f"SELECT {sql.ACCOUNT_STATE_COLUMNS} FROM accounts"
            " WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (sorted(ids),),
        )
        return {row[0]: row[1:] for row in self._cur.fetchall()}

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

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        super().__init__(cursor)
        self._pg = cursor

    def _copy(self, statement: str, rows: Sequence[Sequence[object]]) -> None:
        with self._pg.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def insert_accounts(self, accounts: Sequence[Account]) -> None:
        self._copy(COPY_ACCOUNTS, [sql.account_row(a) for a in accounts])

    def insert_transfers(self, transfers: Sequence[StoredTransfer]) -> None:
        self._copy(COPY_TRANSFERS, [sql.transfer_row(t) for t in transfers])

    def insert_rejections(self, rejections: Sequence[Rejection]) -> None:
        self._copy(COPY_TRANSFERS, [sql.rejection_row(r) for r in rejections])

    def apply_deltas(self, deltas: Mapping[int, CounterDelta]) -> None:
        if not deltas:
            return
        columns = list(zip(*sql.delta_rows(deltas), strict=True))
        self._cur.execute(_APPLY_DELTAS, [list(column) for column in columns])

    def try_netted(self, plan: NettedPlan) -> bool:
        guards = plan.guards
        cur = self._cur
        ids, currencies, debits, credit_sums = map(list, zip(*guards, strict=True))
        try:
            cur.execute(_ORDERED_JOIN)
            cur.execute(_GUARDED_NETTED_UPDATE, (ids, currencies, debits, credit_sums))
            if cur.rowcount != len(guards):
                return False
            self._copy(COPY_TRANSFERS, [sql.plain_row(row) for row in plan.rows])
        except (errors.UniqueViolation, errors.CheckViolation):
            return False  # an id is taken: the exact path replays or rejects it
        return True

    def try_plain(self, outcome: PlainOutcome) -> bool:
        rows = [sql.plain_row(row) for row in outcome.accepted]
        rows += [sql.plain_row(row) for row in outcome.rejected]
        try:
            if rows:
                self._copy(COPY_TRANSFERS, rows)
        except errors.UniqueViolation:
            return False  # an id is taken: the exact path replays or rejects it
        self.apply_deltas(outcome.deltas)
        return True


class PostgresStore:
    """One psycopg connection. Not shared between threads at once."""

    kind = "postgres"

    def __init__(self, conninfo: str) -> None:
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as error:
            raise StoreError(f"cannot connect to postgresql: {error}") from None
        try:
            self.check_durability()
        except BaseException:
            self._conn.close()
            raise

    def check_durability(self) -> None:
        """Refuse settings under which an acknowledged write could be lost."""
        with self._conn.cursor() as cur:
            for name, unsafe in (
                ("fsync", {"off"}),
                ("synchronous_commit", {"off"}),
                ("full_page_writes", {"off"}),
            ):
                cur.execute(f"SHOW {name}")
                row = cur.fetchone()
                value = str(row[0]) if row else "?"
                if value in unsafe:
                    raise UnsafeStoreSettings(f"postgresql {name} is {value}")

    @contextmanager
    def write(self) -> Iterator[PgWriteTx]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield PgWriteTx(cur)
        except _TRANSIENT as error:
            raise TransientStoreError(type(error).__name__) from None
        except psycopg.Error as error:
            raise StoreError(f"postgresql: {type(error).__name__}: {error}") from None

    @contextmanager
    def read(self) -> Iterator[_PgReads]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield _PgReads(cur)
        except psycopg.Error as error:
            raise StoreError(f"postgresql: {type(error).__name__}: {error}") from None

    def execute_raw(self, statement: str, rows: Sequence[Sequence[object]] = ()) -> int:
        """Plain SQL for benchmarks' raw baseline and tests; returns the row count."""
        with self._conn.cursor() as cur:
            if rows:
                cur.executemany(statement, rows)
            else:
                cur.execute(statement)
            return cur.rowcount

    def close(self) -> None:
        self._conn.close()
