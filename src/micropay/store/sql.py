"""SQL shared by the SQLite and PostgreSQL adapters.

Statements are written once with ``?`` placeholders; the PostgreSQL adapter
rewrites them to ``%s``. Only what truly differs (locking, the netted fast
path, bulk loading, error mapping, integrity checks) lives in the adapters.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from micropay.core.accounts import Account
from micropay.core.engine import CounterDelta
from micropay.core.limits import page_rows_max
from micropay.core.netting import ACCOUNT_STATE_FIELDS, NETTED_ROW_FIELDS
from micropay.core.statuses import TransferStatus
from micropay.core.transfers import (
    RESOLVING_FLAGS,
    Rejection,
    StoredTransfer,
    Transfer,
    TransferFlags,
)
from micropay.service.ports import Recorded

ACCOUNT_COLUMNS = (
    "id, currency, kind, owner_ref, flags, credit_limit_micros, debits_pending_micros,"
    " debits_posted_micros, credits_pending_micros, credits_posted_micros, created_at_us"
)
ACCOUNT_STATE_COLUMNS = "id, " + ", ".join(ACCOUNT_STATE_FIELDS)
TRANSFER_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount_micros, currency, code, flags,"
    " pending_id, timeout_s, expires_at_us, reference, metadata, created_at_us, rejected_status"
)
INSERT_ACCOUNT = f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
INSERT_TRANSFER = f"INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
# A netted plan's rows (``NETTED_ROW_FIELDS``); a plain single transfer has no
# pending id, timeout, expiry or rejection.
INSERT_NETTED_TRANSFER = (
    f"INSERT INTO transfers ({', '.join(NETTED_ROW_FIELDS)},"
    " pending_id, timeout_s, expires_at_us, rejected_status)"
    f" VALUES ({','.join('?' * len(NETTED_ROW_FIELDS))}, NULL, 0, NULL, NULL)"
)
# A plain transfer's remembered failure: the same row with its status.
INSERT_PLAIN_REJECTION = (
    f"INSERT INTO transfers ({', '.join(NETTED_ROW_FIELDS)}, rejected_status,"
    " pending_id, timeout_s, expires_at_us)"
    f" VALUES ({','.join('?' * (len(NETTED_ROW_FIELDS) + 1))}, NULL, 0, NULL)"
)
APPLY_DELTA = (
    "UPDATE accounts SET debits_pending_micros = debits_pending_micros + ?,"
    " debits_posted_micros = debits_posted_micros + ?,"
    " credits_pending_micros = credits_pending_micros + ?,"
    " credits_posted_micros = credits_posted_micros + ? WHERE id = ?"
)
_PENDING = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING)
_RESOLVING = RESOLVING_FLAGS

# Each account's counters, recomputed from the journal. Posted: singles and
# posts. Pending: holds not yet resolved.
JOURNAL_COUNTERS = f"""
WITH effective AS (
    SELECT t.* FROM transfers t WHERE t.rejected_status IS NULL
), open_holds AS (
    SELECT h.* FROM effective h
    WHERE (h.flags & {_PENDING}) <> 0 AND NOT EXISTS (
        SELECT 1 FROM effective r WHERE r.pending_id = h.id
    )
), legs AS (
    SELECT debit_account_id AS account_id, 0 AS dp, amount_micros AS dpo, 0 AS cp, 0 AS cpo
        FROM effective WHERE (flags & {_PENDING}) = 0 AND ((flags & {_RESOLVING}) = 0
            OR (flags & {_POST}) <> 0)
    UNION ALL
    SELECT credit_account_id, 0, 0, 0, amount_micros
        FROM effective WHERE (flags & {_PENDING}) = 0 AND ((flags & {_RESOLVING}) = 0
            OR (flags & {_POST}) <> 0)
    UNION ALL
    SELECT debit_account_id, amount_micros, 0, 0, 0 FROM open_holds
    UNION ALL
    SELECT credit_account_id, 0, 0, amount_micros, 0 FROM open_holds
)
SELECT account_id, SUM(dp), SUM(dpo), SUM(cp), SUM(cpo) FROM legs GROUP BY account_id
"""

# Summed in Python: a currency's total may pass int64, where SQLite's SUM() raises.
BALANCES_BY_CURRENCY = """
SELECT currency, debits_pending_micros, debits_posted_micros,
       credits_pending_micros, credits_posted_micros
FROM accounts
"""

ILL_FORMED_TRANSFERS = """
SELECT t.id FROM transfers t
LEFT JOIN accounts d ON d.id = t.debit_account_id
LEFT JOIN accounts c ON c.id = t.credit_account_id
WHERE t.rejected_status IS NULL AND (
    t.amount_micros <= 0 OR t.debit_account_id = t.credit_account_id
    OR d.id IS NULL OR c.id IS NULL
    OR d.currency <> t.currency OR c.currency <> t.currency
)
ORDER BY t.id LIMIT ?
"""

MULTIPLY_RESOLVED_HOLDS = f"""
SELECT r.pending_id, COUNT(*), MIN(h.flags), MIN(h.amount_micros), MAX(r.amount_micros)
FROM transfers r LEFT JOIN transfers h ON h.id = r.pending_id AND h.rejected_status IS NULL
WHERE r.rejected_status IS NULL AND r.pending_id IS NOT NULL
GROUP BY r.pending_id
HAVING COUNT(*) > 1 OR MIN(h.flags) IS NULL OR (MIN(h.flags) & {_PENDING}) = 0
    OR MAX(r.amount_micros) > MIN(h.amount_micros)
ORDER BY r.pending_id LIMIT ?
"""

EXPIRED_HOLDS = f"""
SELECT h.id FROM transfers h
WHERE h.expires_at_us IS NOT NULL AND h.expires_at_us <= ? AND h.rejected_status IS NULL
  AND (h.flags & {_PENDING}) <> 0
  AND NOT EXISTS (
      SELECT 1 FROM transfers r WHERE r.pending_id = h.id AND r.rejected_status IS NULL
  )
ORDER BY h.expires_at_us, h.id LIMIT ?
"""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: Any, params: Any = ...) -> Any: ...

    def executemany(self, sql: Any, params: Any) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...


def account_from_row(row: Sequence[Any]) -> Account:
    return Account(*row)


def account_row(account: Account) -> tuple[object, ...]:
    return (
        account.id,
        account.currency,
        account.kind,
        account.owner_ref,
        account.flags,
        account.credit_limit_micros,
        account.debits_pending_micros,
        account.debits_posted_micros,
        account.credits_pending_micros,
        account.credits_posted_micros,
        account.created_at_us,
    )


def transfer_row(t: StoredTransfer) -> tuple[object, ...]:
    return (
        t.id,
        t.debit_account_id,
        t.credit_account_id,
        t.amount_micros,
        t.currency,
        int(t.code),
        int(t.flags),
        t.pending_id or None,
        t.timeout_s,
        t.expires_at_us or None,
        t.reference,
        t.metadata,
        t.created_at_us,
        None,
    )


def plain_row(row: Sequence[object]) -> tuple[object, ...]:
    """A netted plan's row (``NETTED_ROW_FIELDS``, then an optional status) in column order."""
    status = row[10] if len(row) > 10 else None
    i, d, c, a, currency, code, flags, reference, metadata, at = row[:10]
    return (i, d, c, a, currency, code, flags, None, 0, None, reference, metadata, at, status)


def rejection_row(r: Rejection) -> tuple[object, ...]:
    t = r.request
    return (
        t.id,
        t.debit_account_id,
        t.credit_account_id,
        t.amount_micros,
        t.currency,
        int(t.code),
        int(t.flags),
        t.pending_id or None,
        t.timeout_s,
        None,
        t.reference,
        t.metadata,
        r.created_at_us,
        r.status.value,
    )


def split_recorded(rows: Sequence[Sequence[Any]]) -> Recorded:
    transfers: dict[int, StoredTransfer] = {}
    rejections: dict[int, Rejection] = {}
    for row in rows:
        (tid, debit, credit, amount, currency, code, flags, pending_id, timeout_s) = row[:9]
        expires_at, reference, metadata, created_at, rejected_status = row[9:]
        if rejected_status is None:
            transfers[tid] = StoredTransfer(
                tid,
                debit,
                credit,
                amount,
                currency,
                code,
                flags,
                pending_id or 0,
                timeout_s,
                reference,
                metadata,
                created_at,
                expires_at or 0,
            )
        else:
            request = Transfer(
                tid,
                debit,
                credit,
                amount,
                currency,
                code,
                flags,
                pending_id or 0,
                timeout_s,
                reference,
                metadata,
            )
            rejections[tid] = Rejection(request, TransferStatus(rejected_status), created_at)
    return Recorded(transfers, rejections)


def delta_rows(deltas: Mapping[int, CounterDelta]) -> list[tuple[int, int, int, int, int]]:
    return [
        (
            d.debits_pending_micros,
            d.debits_posted_micros,
            d.credits_pending_micros,
            d.credits_posted_micros,
            account_id,
        )
        for account_id, d in sorted(deltas.items())
    ]


class SqlReader:
    """Portable read queries; adapters supply ``_in`` and ``_sql`` for their dialect."""

    def __init__(self, cursor: Cursor) -> None:
        self._cur = cursor

    def _sql(self, text: str) -> str:
        return text

    def _select_in(self, head: str, column: str, ids: Collection[int]) -> list[Any]:
        raise NotImplementedError

    def get_accounts(self, ids: Collection[int]) -> dict[int, Account]:
        if not ids:
            return {}
        rows = self._select_in(f"SELECT {ACCOUNT_COLUMNS} FROM accounts", "id", ids)
        return {row[0]: account_from_row(row) for row in rows}

    def get_recorded(self, ids: Collection[int]) -> Recorded:
        if not ids:
            return Recorded({}, {})
        return split_recorded(
            self._select_in(f"SELECT {TRANSFER_COLUMNS} FROM transfers", "id", ids)
        )

    def iter_accounts(self) -> Iterator[Account]:
        last = 0
        while True:
            self._cur.execute(
                self._sql(
                    f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id > ? ORDER BY id LIMIT ?"
                ),
                (last, page_rows_max),
            )
            rows = self._cur.fetchall()
            for row in rows:
                yield account_from_row(row)
            if len(rows) < page_rows_max:
                return
            last = rows[-1][0]

    def iter_transfers(self) -> Iterator[StoredTransfer]:
        after: tuple[int, int] = (-1, 0)
        while True:
            self._cur.execute(
                self._sql(
                    f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE rejected_status IS NULL"
                    " AND (created_at_us > ? OR (created_at_us = ? AND id > ?))"
                    " ORDER BY created_at_us, id LIMIT ?"
                ),
                (after[0], after[0], after[1], page_rows_max),
            )
            rows = self._cur.fetchall()
            yield from split_recorded(rows).transfers.values()
            if len(rows) < page_rows_max:
                return
            after = (rows[-1][12], rows[-1][0])

    def expired_hold_ids(self, now_us: int, limit: int) -> list[int]:
        self._cur.execute(self._sql(EXPIRED_HOLDS), (now_us, limit))
        return [row[0] for row in self._cur.fetchall()]

    def journal_counters(self) -> dict[int, CounterDelta]:
        self._cur.execute(self._sql(JOURNAL_COUNTERS))
        return {
            row[0]: CounterDelta(int(row[1]), int(row[2]), int(row[3]), int(row[4]))
            for row in self._cur.fetchall()
        }

    def balances_by_currency(self) -> dict[str, CounterDelta]:
        self._cur.execute(self._sql(BALANCES_BY_CURRENCY))
        totals: dict[str, list[int]] = {}
        while rows := self._cur.fetchmany(page_rows_max):
            for currency, dp, dpo, cp, cpo in rows:
                t = totals.setdefault(currency, [0, 0, 0, 0])
                t[0] += dp
                t[1] += dpo
                t[2] += cp
                t[3] += cpo
        return {currency: CounterDelta(*t) for currency, t in totals.items()}

    def ill_formed_transfers(self, limit: int) -> list[str]:
        self._cur.execute(self._sql(ILL_FORMED_TRANSFERS), (limit,))
        return [
            f"transfer {row[0]} does not balance between existing accounts of its currency"
            for row in self._cur.fetchall()
        ]

    def multiply_resolved_holds(self, limit: int) -> list[str]:
        self._cur.execute(self._sql(MULTIPLY_RESOLVED_HOLDS), (limit,))
        return [
            f"hold {row[0]} resolved {row[1]} times or by an invalid resolution"
            for row in self._cur.fetchall()
        ]


M = TypeVar("M")


def as_mixin(tx: Any, mixin: type[M]) -> M:
    """A store transaction seen as one of the SQL mixins of ``PaymentsSql``.

    Every feature's SQL is mixed into the adapters' transaction classes; a
    transaction without it is a wiring bug, reported at once.
    """
    if isinstance(tx, mixin):
        return tx
    raise TypeError(f"{type(tx).__name__} lacks {mixin.__name__}: add it to PaymentsSql's bases")
