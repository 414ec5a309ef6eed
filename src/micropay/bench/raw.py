"""The raw-store baseline: the same rows with plain SQL and no validation.

Per batch, one durable transaction: insert the transfer rows (``executemany``
on SQLite, ``COPY`` on PostgreSQL) and one counter UPDATE per touched account,
netted in Python with a dict sum. This is the least a store must do to record
the workload, so ``ledger / raw`` shows what the ledger's checks cost.
"""

from __future__ import annotations

import sqlite3
import time
from array import array
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import psycopg

from micropay.bench.workload import CODE_PURCHASE, CURRENCY, Workload
from micropay.store.sql import INSERT_NETTED_TRANSFER, TRANSFER_COLUMNS
from micropay.store.urls import parse_store_url

# The statement the ledger's fast path uses: the columns a plain single
# transfer leaves empty are constants in the SQL, not parameters.
_INSERT = INSERT_NETTED_TRANSFER
_UPDATE = (
    "UPDATE accounts SET debits_posted_micros = debits_posted_micros + ?,"
    " credits_posted_micros = credits_posted_micros + ? WHERE id = ?"
)
_PG_UPDATE = (
    "UPDATE accounts a SET debits_posted_micros = a.debits_posted_micros + s.d,"
    " credits_posted_micros = a.credits_posted_micros + s.c"
    " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS s(id, d, c) WHERE a.id = s.id"
)
_COPY = f"COPY transfers ({TRANSFER_COLUMNS}) FROM STDIN"

Rows = list[tuple[int, int, int, int]]


def open_raw(url: str) -> RawWriter:
    """A raw writer on the database ``url`` names (checked for durable settings)."""
    parsed = parse_store_url(url)
    if parsed.kind == "sqlite":
        return _SqliteRaw(parsed.path)
    return _PgRaw(parsed.conninfo)


def run_raw(
    url: str, workload: Workload, progress: Callable[[int], None]
) -> tuple[float, array[float]]:
    """Write the workload's transfers; return (seconds spent writing, batch latencies in s)."""
    return _timed(open_raw(url), workload.rows(), progress)


def _timed(
    writer: RawWriter, batches: Iterable[Rows], progress: Callable[[int], None]
) -> tuple[float, array[float]]:
    latencies = array("d")
    total_s = 0.0
    try:
        for batch in batches:
            started = time.perf_counter()
            writer.write(batch)
            elapsed = time.perf_counter() - started
            latencies.append(elapsed)
            total_s += elapsed
            progress(len(batch))
    finally:
        writer.close()
    return total_s, latencies


def _counter_sums(batch: Rows) -> list[tuple[int, int, int]]:
    debits: dict[int, int] = {}
    credit_sums: dict[int, int] = {}
    for _, debit, credit, amount in batch:
        debits[debit] = debits.get(debit, 0) + amount
        credit_sums[credit] = credit_sums.get(credit, 0) + amount
    return [
        (debits.get(account, 0), credit_sums.get(account, 0), account)
        for account in sorted(debits.keys() | credit_sums.keys())
    ]


def _rows(batch: Rows) -> list[tuple[Any, ...]]:
    """Rows in ``NETTED_ROW_FIELDS`` order, as the ledger's fast path writes them."""
    now_us = time.time_ns() // 1_000
    return [(i, d, c, a, CURRENCY, CODE_PURCHASE, 0, "", "", now_us) for i, d, c, a in batch]


def _copy_rows(batch: Rows) -> list[tuple[Any, ...]]:
    """Every column in ``TRANSFER_COLUMNS`` order (COPY cannot take constants)."""
    now_us = time.time_ns() // 1_000
    return [
        (i, d, c, a, CURRENCY, CODE_PURCHASE, 0, None, 0, None, "", "", now_us, None)
        for i, d, c, a in batch
    ]


class RawWriter(Protocol):
    def write(self, batch: Rows) -> None:
        """One durable transaction: the batch's rows and its netted counter updates."""
        ...

    def close(self) -> None: ...


class _SqliteRaw:
    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = self._conn.execute("PRAGMA synchronous").fetchone()[0]
        if str(mode).lower() != "wal" or synchronous < 2:
            raise RuntimeError("raw baseline needs WAL and synchronous=FULL")

    def write(self, batch: Rows) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, _rows(batch))
        conn.executemany(_UPDATE, _counter_sums(batch))
        conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


class _PgRaw:
    def __init__(self, conninfo: str) -> None:
        self._conn = psycopg.connect(conninfo, autocommit=True)
        for name in ("fsync", "synchronous_commit"):
            row = self._conn.execute(f"SHOW {name}").fetchone()
            if row is None or row[0] == "off":
                raise RuntimeError(f"raw baseline needs {name} on")

    def write(self, batch: Rows) -> None:
        with self._conn.transaction(), self._conn.cursor() as cur:
            with cur.copy(_COPY) as copy:
                for row in _copy_rows(batch):
                    copy.write_row(row)
            # One statement updates every touched account: the fastest plain
            # way (executemany of per-account UPDATEs is several times slower).
            debits, credit_sums, accounts = zip(*_counter_sums(batch), strict=True)
            cur.execute(_PG_UPDATE, (list(accounts), list(debits), list(credit_sums)))

    def close(self) -> None:
        self._conn.close()
