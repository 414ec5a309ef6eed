"""Differential tests: the same operations on different ledgers must give the same answers.

1. SQLite vs PostgreSQL: seeded random sequences (accounts, batches of singles,
   linked chains, holds, posts, voids, expiries, retries, invalid requests)
   run on both stores with the same fake-clock times. Every result, the final
   accounts, the recorded transfers and the remembered failures must be
   identical: divergences = 0.
2. Netted fast path vs exact engine: the same sequences on SQLite with the
   default ledger and with ``Ledger(store, netted=False)``; identical outputs
   prove the fast path gives the exact engine's results.
3. Every ledger also agrees with the reference model (``tests/model.py``).

``MICROPAY_HYPOTHESIS_EXAMPLES`` scales the number of sequences (a quarter of
it: the default 150 gives 37 sequences of 60 operations); a failure names its seed.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from conftest import FakeClock, PgSchemas, require_pg
from micropay.core.accounts import Account, NewAccount
from micropay.core.transfers import Rejection, StoredTransfer, Transfer
from micropay.service.ledger import Ledger
from micropay.service.ports import LedgerStore
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from model import EXPIRE, LINKED, PENDING, POST, VOID, LedgerModel

SEQUENCES = max(4, int(os.environ.get("MICROPAY_HYPOTHESIS_EXAMPLES", "150")) // 4)
OPERATIONS = 60

# An operation: ("accounts", [NewAccount]) | ("submit", [Transfer]) | ("advance", s) | ("expire",)
Operation = tuple[object, ...]


# --- a seeded generator of operation sequences ----------------------------


@dataclass
class _Gen:
    rng: random.Random
    next_id: int = 100
    accounts: dict[int, str] = field(default_factory=dict)  # id -> currency, as requested
    holds: list[Transfer] = field(default_factory=list)
    sent: list[list[Transfer]] = field(default_factory=list)

    def fresh(self) -> int:
        self.next_id += 1
        return self.next_id

    def pair(self) -> tuple[int, int, str]:
        rng = self.rng
        debit = rng.choice(sorted(self.accounts))
        same = [i for i, c in self.accounts.items() if c == self.accounts[debit] and i != debit]
        credit = rng.choice(same) if same and rng.random() < 0.9 else rng.randint(1, 10)
        currency = self.accounts[debit] if rng.random() < 0.95 else rng.choice(["USD", "EUR"])
        return debit, credit, currency

    def transfer(self) -> Transfer:
        rng = self.rng
        roll = rng.random()
        if roll < 0.45:
            debit, credit, currency = self.pair()
            amount = rng.choice([1, 10_000, 300_000, 1_000_000, 2_500_000])
            return Transfer(self.fresh(), debit, credit, amount, currency, code=rng.randint(0, 3))
        if roll < 0.65:
            debit, credit, currency = self.pair()
            hold = Transfer(
                self.fresh(),
                debit,
                credit,
                rng.choice([200_000, 900_000]),
                currency,
                flags=PENDING,
                timeout_s=rng.choice([0, 5, 20]),
            )
            self.holds.append(hold)
            return hold
        if roll < 0.9 and self.holds:
            hold = rng.choice(self.holds)
            kind = rng.choice([POST, POST, VOID, EXPIRE])
            amount = rng.choice([0, 0, hold.amount_micros // 3, hold.amount_micros + 1])
            debit = rng.choice([0, 0, hold.debit_account_id, 99])
            return Transfer(self.fresh(), debit, 0, amount, "", flags=kind, pending_id=hold.id)
        return rng.choice(
            [
                Transfer(self.fresh(), 1, 1, 5, "USD"),
                Transfer(self.fresh(), 1, 2, 0, "USD"),
                Transfer(self.fresh(), 1, 2, 5, "XXX"),
                Transfer(self.fresh(), 1, 2, 5, "USD", timeout_s=3),
                Transfer(self.fresh(), 1, 2, 5, "USD", flags=PENDING | VOID),
                Transfer(self.fresh(), 1, 2, 5, "USD", pending_id=7),
            ]
        )

    def operation(self) -> Operation:
        rng = self.rng
        roll = rng.random()
        if roll < 0.08:
            requests = [
                NewAccount(
                    rng.randint(1, 10),
                    rng.choice(["USD", "USD", "EUR"]),
                    "customer_wallet",
                    flags=rng.choice([0, 1, 2]),
                    credit_limit_micros=rng.choice([0, 1_000_000]),
                )
                for _ in range(rng.randint(1, 2))
            ]
            for r in requests:
                self.accounts.setdefault(r.id, r.currency)
            return ("accounts", requests)
        if roll < 0.15:
            return ("advance", rng.choice([1, 5, 21]))
        if roll < 0.22:
            return ("expire",)
        if roll < 0.32 and self.sent:
            batch = rng.choice(self.sent[-6:])
            if rng.random() < 0.5:
                return ("submit", list(batch))
            t = rng.choice(batch)
            changed = Transfer(
                t.id,
                t.debit_account_id,
                t.credit_account_id,
                t.amount_micros + 1,
                t.currency,
                t.code,
                t.flags & ~LINKED,
                t.pending_id,
                t.timeout_s,
            )
            return ("submit", [changed])
        size = rng.choice([1, 1, 2, 3, 5])
        batch = [self.transfer() for _ in range(size)]
        if rng.random() < 0.35:  # a linked chain (sometimes left open at the end)
            close = rng.random() < 0.9
            batch = [
                _with_flags(t, t.flags | LINKED) if i < size - 1 or not close else t
                for i, t in enumerate(batch)
            ]
        self.sent.append(batch)
        return ("submit", batch)


def _with_flags(t: Transfer, flags: int) -> Transfer:
    return Transfer(
        t.id,
        t.debit_account_id,
        t.credit_account_id,
        t.amount_micros,
        t.currency,
        t.code,
        flags,
        t.pending_id,
        t.timeout_s,
        t.reference,
        t.metadata,
    )


BASE_ACCOUNTS: list[NewAccount] = [
    NewAccount(1, "USD", "processor_clearing"),
    NewAccount(2, "USD", "customer_wallet", flags=1),
    NewAccount(3, "USD", "merchant_payable"),
    NewAccount(4, "EUR", "processor_clearing"),
    NewAccount(5, "EUR", "customer_tab", flags=1, credit_limit_micros=1_000_000),
    NewAccount(6, "USD", "platform_revenue", flags=2, credit_limit_micros=500_000),
]


def random_sequence(seed: int, length: int = OPERATIONS) -> list[Operation]:
    gen = _Gen(random.Random(seed))
    for account in BASE_ACCOUNTS:
        gen.accounts[account.id] = account.currency
    ops: list[Operation] = [
        ("accounts", BASE_ACCOUNTS),
        ("submit", [Transfer(1, 1, 2, 3_000_000, "USD"), Transfer(2, 4, 5, 500_000, "EUR")]),
    ]
    ops += [gen.operation() for _ in range(length)]
    return ops


def netted_and_exact_sequence() -> list[Operation]:
    """A sequence that must use both paths: netted batches, and batches the guards refuse."""
    return [
        ("accounts", BASE_ACCOUNTS),
        # netted: plain singles the guards accept
        ("submit", [Transfer(1, 1, 2, 3_000_000, "USD"), Transfer(2, 1, 3, 10, "USD")]),
        ("submit", [Transfer(3, 2, 3, 1_000_000, "USD"), Transfer(4, 2, 3, 1_000_000, "USD")]),
        # refused by a guard (overdraws the wallet): exact path, last one fails
        ("submit", [Transfer(5, 2, 3, 600_000, "USD"), Transfer(6, 2, 3, 600_000, "USD")]),
        # refused by a taken id (a replay): exact path
        ("submit", [Transfer(3, 2, 3, 1_000_000, "USD"), Transfer(7, 1, 3, 1, "USD")]),
        # holds: never netted
        ("submit", [Transfer(8, 2, 3, 200_000, "USD", flags=PENDING, timeout_s=5)]),
        ("advance", 6),
        ("expire",),
        # a linked chain of plain singles: netted when it all fits
        ("submit", [Transfer(9, 1, 2, 5, "USD", flags=LINKED), Transfer(10, 2, 3, 5, "USD")]),
        # revenue account 6 may not be credited past its debits + 0.5 USD
        ("submit", [Transfer(11, 3, 6, 400_000, "USD"), Transfer(12, 3, 6, 400_000, "USD")]),
    ]


# --- running a sequence ---------------------------------------------------


@dataclass
class Outcome:
    results: list[object]
    accounts: list[Account]
    transfers: list[StoredTransfer]
    rejections: dict[int, Rejection]
    stats: dict[str, int]


def run_sequence(store: LedgerStore, ops: list[Operation], *, netted: bool = True) -> Outcome:
    clock = FakeClock()
    ledger = Ledger(store, clock=clock, netted=netted)
    results: list[object] = []
    ids: set[int] = set()
    for op in ops:
        if op[0] == "accounts":
            results.append(ledger.create_accounts(op[1]))  # type: ignore[arg-type]
        elif op[0] == "submit":
            batch: list[Transfer] = op[1]  # type: ignore[assignment]
            ids.update(t.id for t in batch)
            results.append(ledger.submit(batch))
        elif op[0] == "advance":
            clock.advance(op[1])  # type: ignore[arg-type]
        else:
            expired = ledger.expire_holds()
            ids.update(r.id for r in expired)
            results.append(expired)
    report = reconcile(store)
    assert report.ok, report.violations
    with store.read() as reader:
        accounts = list(reader.iter_accounts())
        transfers = list(reader.iter_transfers())
        rejections = reader.get_recorded(ids).rejections
    return Outcome(results, accounts, transfers, rejections, dict(ledger.stats))


def run_model(ops: list[Operation]) -> list[object]:
    clock = FakeClock()
    model = LedgerModel()
    results: list[object] = []
    for op in ops:
        if op[0] == "accounts":
            results.append(model.create_accounts(op[1]))  # type: ignore[arg-type]
        elif op[0] == "submit":
            results.append(model.submit(op[1], clock.now_us))  # type: ignore[arg-type]
        elif op[0] == "advance":
            clock.advance(op[1])  # type: ignore[arg-type]
        else:
            results.append(model.expire_holds(clock.now_us))
    return results


def divergences(a: Outcome, b: Outcome) -> list[str]:
    found = [
        f"operation {i}: {x} != {y}"
        for i, (x, y) in enumerate(zip(a.results, b.results, strict=True))
        if x != y
    ]
    if a.accounts != b.accounts:
        found.append(f"accounts differ: {a.accounts} != {b.accounts}")
    if a.transfers != b.transfers:
        found.append("recorded transfers differ")
    if a.rejections != b.rejections:
        found.append("remembered failures differ")
    return found


# --- stores ---------------------------------------------------------------


@pytest.fixture
def fresh_sqlite(sqlite_template: Path, tmp_path: Path) -> Iterator[Callable[[], LedgerStore]]:
    opened: list[LedgerStore] = []
    counter = iter(range(1_000_000))

    def make() -> LedgerStore:
        path = tmp_path / f"diff-{next(counter)}.db"
        shutil.copyfile(sqlite_template, path)
        opened.append(open_store(f"sqlite:///{path}"))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def fresh_pg(pg_schemas: PgSchemas) -> Iterator[Callable[[], LedgerStore]]:
    """One schema for the test; each sequence gets it emptied (tests only: triggers bypassed)."""
    require_pg()
    url = pg_schemas.new_url()
    opened: list[LedgerStore] = []

    def make() -> LedgerStore:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("DELETE FROM transfers")
            conn.execute("DELETE FROM accounts")
            conn.execute("SET session_replication_role = origin")
        for store in opened:
            store.close()
        opened[:] = [open_store(url)]
        return opened[0]

    yield make
    for store in opened:
        store.close()


# --- tests ----------------------------------------------------------------


def test_netted_fast_path_equals_exact_engine_on_sqlite(
    fresh_sqlite: Callable[[], LedgerStore],
) -> None:
    totals = {"netted": 0, "exact": 0}
    diverged: list[str] = []
    sequences = [netted_and_exact_sequence()] + [random_sequence(s) for s in range(SEQUENCES)]
    for seed, ops in enumerate(sequences):
        fast = run_sequence(fresh_sqlite(), ops)
        exact = run_sequence(fresh_sqlite(), ops, netted=False)
        assert exact.stats["netted"] == 0
        assert fast.results == run_model(ops), f"sequence {seed - 1} disagrees with the model"
        diverged += [f"sequence {seed - 1}: {d}" for d in divergences(fast, exact)]
        totals["netted"] += fast.stats["netted"]
        totals["exact"] += fast.stats["exact"]
    print(f"\nnetted vs exact: {len(sequences)} sequences, {totals}, divergences={len(diverged)}")
    assert diverged == []
    assert totals["netted"] > 0
    assert totals["exact"] > 0


@pytest.mark.postgres
def test_forced_sequence_uses_both_paths_on_both_stores(
    fresh_sqlite: Callable[[], LedgerStore], fresh_pg: Callable[[], LedgerStore]
) -> None:
    ops = netted_and_exact_sequence()
    lite = run_sequence(fresh_sqlite(), ops)
    pg = run_sequence(fresh_pg(), ops)
    for outcome in (lite, pg):
        assert outcome.stats["netted"] >= 3, outcome.stats
        assert outcome.stats["exact"] >= 3, outcome.stats
    assert divergences(lite, pg) == []
    assert lite.results == run_model(ops)


@pytest.mark.postgres
def test_sqlite_and_postgres_agree(
    fresh_sqlite: Callable[[], LedgerStore], fresh_pg: Callable[[], LedgerStore]
) -> None:
    diverged: list[str] = []
    operations = 0
    for seed in range(SEQUENCES):
        ops = random_sequence(seed)
        operations += len(ops)
        lite = run_sequence(fresh_sqlite(), ops)
        pg = run_sequence(fresh_pg(), ops)
        diverged += [f"seed {seed}: {d}" for d in divergences(lite, pg)]
        assert pg.results == run_model(ops), f"seed {seed} disagrees with the model"
    print(
        f"\nsqlite vs postgres: {SEQUENCES} sequences, {operations} operations,"
        f" divergences={len(diverged)}"
    )
    assert diverged == []
