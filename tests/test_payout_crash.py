"""A worker killed mid-payout: after restart, no payout is made twice and none is lost.

The worker runs in a real process (``python tests/test_payout_crash.py ...``)
and is killed with SIGKILL at chosen points: just before the processor is
asked to pay, just after the processor paid but before the ledger recorded it,
and at a random moment. The payout rail keeps its books in its own SQLite file
(keyed by the idempotency key, like a real processor), so they survive the
kill. After several cycles and a final run, the rail's payouts equal the
ledger's: per payee, the same count and amounts; none twice, none lost, and
both reconciliations clean.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from micropay.core.money import parse_amount
from micropay.payments.models import FundingSource, PurchaseStatus, TopUpStatus
from micropay.payments.processor import Outcome, PayoutRequest, PayoutResult
from micropay.payouts.plans import Bucket, Schedule
from micropay.payouts.splits import Share
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.ledger import system_clock_us
from micropay.service.payments import Payments
from micropay.service.payouts import Payouts, VerificationStatus, reconcile_payouts
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.store.payouts_sql import bind_payouts_sql
from micropay.worker import Registry, Worker, register_payout_jobs

subprocess_timeout_s = 60.0
day_us = 86_400 * 1_000_000
payees = ("author", "editor", "artist")


class PersistentRail(SimulatedProcessor):
    """Simulated charges; payouts kept in a SQLite file that outlives the process.

    ``pause(stage, request)`` is called with stage ``before`` (nothing paid yet)
    and ``after`` (paid and committed at the rail, the answer not yet returned).
    """

    def __init__(self, path: Path, pause: Callable[[str, PayoutRequest], None] | None = None):
        super().__init__()
        self.pause = pause
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS rail_payouts (n INTEGER PRIMARY KEY,"
            " idempotency_key TEXT NOT NULL UNIQUE, destination TEXT NOT NULL,"
            " amount_minor INTEGER NOT NULL, currency TEXT NOT NULL)"
        )

    def payout(self, request: PayoutRequest) -> PayoutResult:
        if self.pause is not None:
            self.pause("before", request)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT OR IGNORE INTO rail_payouts"
                " (idempotency_key, destination, amount_minor, currency) VALUES (?, ?, ?, ?)",
                (
                    request.idempotency_key,
                    request.destination_token,
                    request.amount_minor,
                    request.currency,
                ),
            )
            n, amount = self.db.execute(
                "SELECT n, amount_minor FROM rail_payouts WHERE idempotency_key = ?",
                (request.idempotency_key,),
            ).fetchone()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        result = PayoutResult(Outcome.succeeded, f"po_rail_{n:06d}", amount)
        if self.pause is not None:
            self.pause("after", request)
        return result

    def paid(self) -> dict[str, tuple[int, str]]:
        rows = self.db.execute("SELECT n, amount_minor, currency FROM rail_payouts").fetchall()
        return {f"po_rail_{n:06d}": (amount, currency) for n, amount, currency in rows}

    def to(self, destination: str) -> list[int]:
        rows = self.db.execute(
            "SELECT amount_minor FROM rail_payouts WHERE destination = ? ORDER BY n",
            (destination,),
        ).fetchall()
        return [r[0] for r in rows]

    def idempotency_keys(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT idempotency_key FROM rail_payouts")}


def usd(text: str) -> int:
    return parse_amount(text, "USD")


def offset_clock(days: int) -> Callable[[], int]:
    return lambda: system_clock_us() + days * day_us


def payout_rows(store: Any) -> list[Any]:
    with store.write() as tx:
        return list(bind_payouts_sql(tx).payouts_for_reconcile())


# --- the worker process -------------------------------------------------------------


def _child(database_url: str, rail_path: str, days: int, kill_at: str) -> None:
    """Run the payout jobs until nothing is left; with ``kill_at``, hang there to be killed."""

    def pause(stage: str, request: PayoutRequest) -> None:
        if stage == kill_at:
            print(f"{stage} {request.idempotency_key}", flush=True)
            time.sleep(subprocess_timeout_s * 2)  # killed long before
            raise SystemExit(4)

    store: Any = open_store(database_url)
    rail = PersistentRail(Path(rail_path), pause)
    try:
        clock = offset_clock(days)
        payouts = Payouts(Payments(store, rail, clock=clock), bind=bind_payouts_sql)
        registry = Registry()
        register_payout_jobs(registry, lambda: payouts)
        worker = Worker(store, registry, clock=clock)
        print("ready", flush=True)
        deadline = time.monotonic() + subprocess_timeout_s
        while time.monotonic() < deadline:
            ran = worker.tick()
            pending = [p for p in payout_rows(store) if p.status == "pending"]
            if not ran and not pending:
                break
            if not ran:
                # Payouts left pending by a killed worker: its PostgreSQL session may
                # still hold a row lock until the server notices. Ask again.
                payouts.run_pending()
                time.sleep(0.05)
        print(json.dumps({"done": True}), flush=True)
    finally:
        rail.db.close()
        store.close()


# --- the test ---------------------------------------------------------------------


def _spawn(database_url: str, rail: Path, days: int, kill_at: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, database_url, str(rail), str(days), kill_at],
        stdout=subprocess.PIPE,
        text=True,
    )


def _read_line(proc: subprocess.Popen[str], timeout_s: float = subprocess_timeout_s) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            proc.kill()
            pytest.fail(f"no line from the worker process within {timeout_s} s")
    return proc.stdout.readline().strip()


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(subprocess_timeout_s)
    if proc.stdout is not None:
        proc.stdout.close()


class Shop:
    """The parent's side: a merchant whose book's proceeds go to three verified payees."""

    def __init__(self, store: Any, rail: PersistentRail) -> None:
        self.store = store
        self.rail = rail
        self.days = 0
        self.payments = Payments(store, rail, clock=self.now_us)
        self.payouts = Payouts(self.payments, rng=random.Random(5), bind=bind_payouts_sql)
        merchant = self.payments.create_merchant(
            "Press", "USD", funding_policy=(FundingSource.wallet,)
        )
        self.merchant_id = merchant.id
        self.payments.set_item(merchant.id, "book", "A book", usd("3.00"))
        self.payee_ids = {}
        for name in payees:
            payee = self.payouts.create_payee(
                name,
                "USD",
                f"ba_{name}",
                schedule=Schedule.daily,
                threshold_micros=usd("1.00"),
                hold_s=0,
            )
            self.payee_ids[name] = payee.id
            assert self.payouts.start_verification(payee.id).status is (
                VerificationStatus.deposits_sent
            )
            first, second = (a * 10_000 for a in rail.to(f"ba_{name}"))
            confirmed = self.payouts.confirm_deposits(payee.id, first, second)
            assert confirmed.status is VerificationStatus.verified
        shares = [
            Share(self.payee_ids[n], bps)
            for n, bps in zip(payees, (5_000, 3_000, 2_000), strict=True)
        ]
        self.payouts.set_split(merchant.id, "book", shares)
        self.sold = 0

    def now_us(self) -> int:
        return system_clock_us() + self.days * day_us

    def sell(self, count: int) -> None:
        """``count`` readers each buy the book (one reader cannot buy it twice)."""
        for _ in range(count):
            self.sold += 1
            reader = self.payments.create_customer(
                "USD", processor_customer_token="c", payment_method_token="p"
            ).id
            loaded = self.payments.top_up(reader, usd("10.00"), f"load-{self.sold}")
            assert loaded.status is TopUpStatus.ok
            receipt = self.payments.purchase(self.merchant_id, reader, "book", f"b{self.sold}")
            assert receipt.status is PurchaseStatus.ok
            self.payouts.record_sale(receipt.purchase_id)


# (days offset of the worker's clock, where it is killed): a new day each cycle, so the
# killed worker's leases have expired and its jobs are taken over.
CYCLES = [
    (1, "before"),
    (2, "after"),
    (3, "after"),  # killed again right after re-asking the payout it was killed after
    (4, "random"),
    (5, "before"),
    (6, "after"),
    (7, "random"),
]
final_day = 8


def test_killed_payout_workers_never_pay_twice_or_lose_a_payout(
    store: Any, database_url: str, tmp_path: Path
) -> None:
    rail_path = tmp_path / "rail.db"
    rail = PersistentRail(rail_path)
    shop = Shop(store, rail)
    deposits = len(rail.idempotency_keys())
    assert deposits == 2 * len(payees)
    rng = random.Random(11)
    killed_after_paying = killed_before_paying = 0
    try:
        for days, kill_at in CYCLES:
            shop.days = days
            shop.sell(2)
            proc = _spawn(database_url, rail_path, days, kill_at)
            try:
                assert _read_line(proc) == "ready"
                if kill_at == "random":
                    time.sleep(rng.uniform(0.0, 0.4))
                else:
                    stage, key = _read_line(proc).split()
                    assert stage == kill_at
                    if kill_at == "after":
                        assert key in rail.idempotency_keys()
                    elif key not in rail.idempotency_keys():
                        killed_before_paying += 1  # (else a payout paid before, asked again)
                proc.send_signal(signal.SIGKILL)
                proc.wait(subprocess_timeout_s)
            finally:
                _reap(proc)
            if kill_at == "after":
                # The rail paid, the ledger has not recorded it: the payout is pending.
                payout_id = int(key.removeprefix("micropay-payout-"))
                [row] = [p for p in payout_rows(store) if p.id == payout_id]
                assert row.status == "pending"
                killed_after_paying += 1
        assert killed_after_paying == 3
        assert killed_before_paying >= 1

        shop.days = final_day
        proc = _spawn(database_url, rail_path, final_day, "none")
        try:
            assert _read_line(proc) == "ready"
            assert json.loads(_read_line(proc)) == {"done": True}
            assert proc.wait(subprocess_timeout_s) == 0
        finally:
            _reap(proc)

        rows = payout_rows(store)
        assert {p.status for p in rows} == {"succeeded"}  # none lost in flight
        paid = rail.paid()
        # None twice: one rail payout per ledger payout and per idempotency key.
        assert len(paid) == len(rows) == len(rail.idempotency_keys())
        assert sorted(p.processor_payout_id for p in rows) == sorted(paid)
        for name, payee_id in shop.payee_ids.items():
            ledger = sorted(p.amount_micros // 10_000 for p in rows if p.payee_id == payee_id)
            assert sorted(rail.to(f"ba_{name}")) == ledger
            balances = shop.payouts.balances(payee_id)
            # None lost: everything the payee earned went out (daily, threshold 1.00).
            assert balances[Bucket.pending] == 0
            assert balances[Bucket.available] == 0
        earnings = [p for p in rows if p.purpose == "earnings"]
        assert len(earnings) > len(payees)  # several periods were paid, not one
        assert sum(p.amount_micros for p in rows) == usd("3.00") * shop.sold  # no fee set
        report = reconcile(store)
        assert report.ok, report.violations
        assert reconcile_payouts(store, paid, bind=bind_payouts_sql) == []
    finally:
        rail.db.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
