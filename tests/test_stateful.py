"""Stateful model test: the ledger service on a real store against a plain-Python model.

A Hypothesis rule-based machine opens accounts, submits single transfers,
linked batches (some failing), holds with timeouts, posts (full and partial),
voids, client expiries, retries of the same request and of a changed request
under a used id, and batches that mix valid and invalid transfers; it moves the
fake clock and runs the expiry job. After every step:

- every result equals the model's (status and ``replayed``);
- every account's four counters equal the model's, and no other account exists;
- the recorded transfers and remembered failures equal the model's;
- ``reconcile(store)`` reports no violation;
- a rejected operation (no transfer in it took effect) left every balance as it was.

Each example runs on a fresh database. ``MICROPAY_HYPOTHESIS_EXAMPLES`` sets the
number of SQLite examples (default 150; PostgreSQL runs a quarter of them, at
least 5) and ``MICROPAY_HYPOTHESIS_STEPS`` the steps per example (default 40).
``MICROPAY_HYPOTHESIS_RANDOM=1``: fresh random examples, not the fixed derandomized ones.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import FakeClock, PgSchemas, require_pg
from micropay.core.accounts import NewAccount
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import Transfer, TransferResult
from micropay.service.ledger import Ledger
from micropay.service.ports import LedgerStore
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from model import EXPIRE, LINKED, PENDING, POST, VOID, LedgerModel

EXAMPLES = int(os.environ.get("MICROPAY_HYPOTHESIS_EXAMPLES", "150"))
PG_EXAMPLES = max(5, EXAMPLES // 4)
STEPS = int(os.environ.get("MICROPAY_HYPOTHESIS_STEPS", "40"))
ACCOUNT_IDS = range(1, 10)  # 1-5 opened at start; 6-9 by the open_accounts rule
TRANSFER_ID_MAX = 40  # small, so ids collide: replays and conflicts
FIGURES: dict[str, int] = {}


# --- generation ----------------------------------------------------------


def transfer_strategy(model: LedgerModel) -> st.SearchStrategy[Transfer]:
    """One transfer request, valid or not, informed by the model's state."""
    opened = sorted(model.accounts) or [1]
    account_ids = st.one_of(*[st.sampled_from(opened)] * 9, st.sampled_from(list(ACCOUNT_IDS)))
    ids = st.integers(1, TRANSFER_ID_MAX)  # replaced by a fresh id, most of the time

    @st.composite
    def plain(draw: st.DrawFn, flags: int) -> Transfer:
        debit = draw(account_ids)
        credit = draw(account_ids)
        if credit == debit and draw(st.integers(0, 9)):
            credit = draw(st.sampled_from([i for i in opened if i != debit] or [debit]))
        known = model.accounts.get(debit)
        currency = (
            known.currency
            if known and draw(st.integers(0, 9))
            else draw(st.sampled_from(["USD", "EUR"]))
        )
        timeout_s = draw(st.sampled_from([0, 5, 30, 120])) if flags & PENDING else 0
        amount = draw(st.sampled_from([1, 250_000, 1_000_000, 3_000_000]))
        return Transfer(draw(ids), debit, credit, amount, currency, 0, flags, 0, timeout_s)

    @st.composite
    def resolving(draw: st.DrawFn, kind: int) -> Transfer:
        holds = sorted(model.transfers.values(), key=lambda t: t.id)
        open_holds = [t for t in holds if t.flags & PENDING and t.id not in model.resolved]
        closed = [t for t in holds if t.flags & PENDING] or holds
        holds = open_holds if open_holds and draw(st.integers(0, 4)) else closed
        if holds and draw(st.integers(0, 4)):
            hold = draw(st.sampled_from(holds))
            pending_id = hold.id
            amounts = [0, hold.amount_micros, hold.amount_micros // 2, hold.amount_micros + 1]
            debit = draw(st.sampled_from([0, 0, hold.debit_account_id, 9]))
            currency = draw(st.sampled_from(["", "", hold.currency, "EUR"]))
        else:
            pending_id = draw(ids)
            amounts = [0, 1]
            debit, currency = 0, ""
        amount = draw(st.sampled_from(amounts if kind == POST else [*amounts[:2], 7]))
        return Transfer(draw(ids), debit, 0, amount, currency, 0, kind, pending_id)

    @st.composite
    def invalid(draw: st.DrawFn) -> Transfer:
        base = Transfer(draw(ids), 1, 2, 1_000, "USD")
        return draw(
            st.sampled_from(
                [
                    Transfer(0, 1, 2, 1_000, "USD"),
                    Transfer(base.id, 1, 2, 0, "USD"),
                    Transfer(base.id, 2, 2, 1_000, "USD"),
                    Transfer(base.id, 1, 2, 1_000, "XXX"),
                    Transfer(base.id, 1, 2, 1_000, "USD", timeout_s=5),
                    Transfer(base.id, 1, 2, 1_000, "USD", pending_id=3),
                    Transfer(base.id, 1, 2, 1_000, "USD", flags=PENDING | POST),
                    Transfer(base.id, 1, 2, 1_000, "USD", code=70_000),
                    Transfer(base.id, 0, 0, 0, "", flags=VOID, pending_id=base.id),
                ]
            )
        )

    kinds = {
        "single": plain(0),
        "hold": plain(PENDING),
        "post": resolving(POST),
        "void": resolving(VOID),
        "expire": resolving(EXPIRE),
        "invalid": invalid(),
    }
    weighted = ["single"] * 4 + ["hold"] * 3 + ["post"] * 2 + ["void", "expire", "invalid"]
    return st.sampled_from(weighted).flatmap(kinds.__getitem__)


def new_account_strategy() -> st.SearchStrategy[NewAccount]:
    return st.builds(
        NewAccount,
        id=st.sampled_from(list(ACCOUNT_IDS)),
        currency=st.sampled_from(["USD", "USD", "EUR"]),
        kind=st.sampled_from(["customer_wallet", "merchant_payable"]),
        flags=st.sampled_from([0, 0, 1, 2]),
        credit_limit_micros=st.sampled_from([0, 0, 2_000_000]),
    )


BASE_ACCOUNTS = [
    NewAccount(1, "USD", "processor_clearing"),
    NewAccount(2, "USD", "customer_wallet", flags=1),
    NewAccount(3, "USD", "merchant_payable"),
    NewAccount(4, "EUR", "processor_clearing"),
    NewAccount(5, "EUR", "customer_tab", flags=1, credit_limit_micros=2_000_000),
]


# --- the machine ---------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    """One example: a fresh store, a ledger on it, and the model beside it."""

    open_fresh_store: Callable[[], LedgerStore]

    def __init__(self) -> None:
        super().__init__()
        self.store = type(self).open_fresh_store()
        self.clock = FakeClock()
        self.ledger = Ledger(self.store, clock=self.clock)
        self.model = LedgerModel()
        self.batches: list[list[Transfer]] = []
        self.sent_ids: set[int] = set()
        self.next_id = TRANSFER_ID_MAX
        FIGURES["examples"] = FIGURES.get("examples", 0) + 1

    def teardown(self) -> None:
        for path in ("netted", "exact"):
            FIGURES[path] = FIGURES.get(path, 0) + self.ledger.stats[path]
        self.store.close()

    # --- helpers ---

    def _counters(self) -> dict[int, tuple[int, int, int, int]]:
        return {
            i: (
                a.debits_pending_micros,
                a.debits_posted_micros,
                a.credits_pending_micros,
                a.credits_posted_micros,
            )
            for i, a in self.ledger.accounts(list(ACCOUNT_IDS)).items()
        }

    def _submit(self, batch: list[Transfer]) -> list[TransferResult]:
        before = self._counters()
        results = self.ledger.submit(batch)
        expected = self.model.submit(batch, self.clock.now_us)
        assert results == expected, (batch, results, expected)
        for r in results:
            key = "status_" + r.status.value + ("_replayed" if r.replayed else "")
            FIGURES[key] = FIGURES.get(key, 0) + 1
        self._after(before, results)
        self.batches.append(batch)
        self.sent_ids.update(t.id for t in batch)
        FIGURES["transfers"] = FIGURES.get("transfers", 0) + len(batch)
        return results

    def _after(
        self, before: dict[int, tuple[int, int, int, int]], results: list[TransferResult]
    ) -> None:
        took_effect = [r for r in results if r.ok and not r.replayed]
        if not took_effect:
            FIGURES["rejected_operations"] = FIGURES.get("rejected_operations", 0) + 1
            assert self._counters() == before, "a rejected operation changed a balance"

    # --- rules ---

    @initialize()
    def open_base_accounts(self) -> None:
        results = self.ledger.create_accounts(BASE_ACCOUNTS)
        assert results == self.model.create_accounts(BASE_ACCOUNTS)
        assert all(r.status is AccountStatus.ok for r in results)
        funding = [Transfer(1_001, 1, 2, 5_000_000, "USD"), Transfer(1_002, 4, 5, 1_000_000, "EUR")]
        self._submit(funding)
        self.batches.clear()

    @rule(requests=st.lists(new_account_strategy(), min_size=1, max_size=3))
    def open_accounts(self, requests: list[NewAccount]) -> None:
        before = self._counters()
        results = self.ledger.create_accounts(requests)
        assert results == self.model.create_accounts(requests)
        assert {i: c for i, c in self._counters().items() if i in before} == before

    @rule(data=st.data(), size=st.integers(1, 4), linked=st.sampled_from([0, 0, 1, 2]))
    def submit_batch(self, data: st.DataObject, size: int, linked: int) -> None:
        """Singles, holds, posts, voids, invalid ones; linked=1 links all, 2 links at random."""
        batch = []
        for index in range(size):
            t = data.draw(transfer_strategy(self.model))
            if data.draw(st.integers(0, 9)):
                self.next_id += 1
                t = Transfer(**{**_fields(t), "id": self.next_id})
            link = linked == 1 and index < size - 1
            if linked == 2:
                link = data.draw(st.booleans())
            if link:
                t = Transfer(**{**_fields(t), "flags": t.flags | LINKED})
            batch.append(t)
        self._submit(batch)

    @rule(data=st.data(), size=st.integers(1, 3))
    def purchases(self, data: st.DataObject, size: int) -> None:
        """Plain singles that mostly succeed (the netted fast path), some overdrawing."""
        batch = []
        for _ in range(size):
            payer = data.draw(st.sampled_from(sorted(self.model.accounts)))
            payees = [
                i
                for i, a in self.model.accounts.items()
                if i != payer and a.currency == self.model.accounts[payer].currency
            ]
            if not payees:
                continue
            payee = data.draw(st.sampled_from(payees))
            amount = data.draw(st.sampled_from([100_000, 400_000, 1_500_000, 4_000_000]))
            self.next_id += 1
            currency = self.model.accounts[payer].currency
            batch.append(Transfer(self.next_id, payer, payee, amount, currency))
        if batch:
            self._submit(batch)

    @rule(
        data=st.data(),
        timeout_s=st.sampled_from([5, 30, 0]),
        then=st.sampled_from(["keep", "post", "post_part", "void"]),
    )
    def hold(self, data: st.DataObject, timeout_s: int, then: str) -> None:
        """A hold, optionally resolved in the same batch."""
        payer = data.draw(st.sampled_from(sorted(self.model.accounts)))
        payees = [
            i
            for i, a in self.model.accounts.items()
            if i != payer and a.currency == self.model.accounts[payer].currency
        ]
        if not payees:
            return
        payee = data.draw(st.sampled_from(payees))
        amount = data.draw(st.sampled_from([300_000, 2_000_000]))
        self.next_id += 1
        hold_id = self.next_id
        currency = self.model.accounts[payer].currency
        batch = [
            Transfer(hold_id, payer, payee, amount, currency, flags=PENDING, timeout_s=timeout_s)
        ]
        if then != "keep":
            self.next_id += 1
            kind = VOID if then == "void" else POST
            part = amount // 3 if then == "post_part" else 0
            batch.append(Transfer(self.next_id, 0, 0, part, "", flags=kind, pending_id=hold_id))
        self._submit(batch)

    @precondition(lambda self: bool(self.model.open_holds()))
    @rule(data=st.data(), kind=st.sampled_from([POST, POST, VOID, EXPIRE]), part=st.booleans())
    def resolve_open_hold(self, data: st.DataObject, kind: int, part: bool) -> None:
        hold = data.draw(st.sampled_from(sorted(self.model.open_holds(), key=lambda t: t.id)))
        amount = hold.amount_micros // 2 if part and kind == POST else 0
        self.next_id += 1
        self._submit([Transfer(self.next_id, 0, 0, amount, "", flags=kind, pending_id=hold.id)])

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def retry_same_batch(self, data: st.DataObject) -> None:
        batch = data.draw(st.sampled_from(self.batches[-5:]))
        self._submit(list(batch))

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data(), change=st.sampled_from(["amount", "code", "reference"]))
    def retry_changed_request(self, data: st.DataObject, change: str) -> None:
        batch = data.draw(st.sampled_from(self.batches[-5:]))
        t = data.draw(st.sampled_from(batch))
        fields = _fields(t)
        if change == "amount":
            fields["amount_micros"] = t.amount_micros + 1
        elif change == "code":
            fields["code"] = t.code + 1
        else:
            fields["reference"] = t.reference + "x"
        fields["flags"] = t.flags & ~LINKED
        self._submit([Transfer(**fields)])

    @rule(seconds=st.sampled_from([1, 4, 5, 29, 31, 121]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(seconds=st.sampled_from([0, 5, 30, 31]))
    def expire_holds(self, seconds: int) -> None:
        self.clock.advance(seconds)
        before = self._counters()
        results = self.ledger.expire_holds()
        expected = self.model.expire_holds(self.clock.now_us)
        assert results == expected
        FIGURES["expired"] = FIGURES.get("expired", 0) + len(results)
        self._after(before, results)

    # --- after every step ---

    @invariant()
    def counters_records_and_reconcile_agree(self) -> None:
        FIGURES["steps"] = FIGURES.get("steps", 0) + 1
        assert self._counters() == self.model.counters()
        ids = self.sent_ids | set(self.model.transfers) | set(self.model.rejections)
        with self.store.read() as reader:
            recorded = reader.get_recorded(ids)
        assert recorded.transfers == self.model.transfers
        assert {i: (r.request, r.status) for i, r in recorded.rejections.items()} == (
            self.model.rejections
        )
        report = reconcile(self.store)
        assert report.ok, report.violations


def _fields(t: Transfer) -> dict[str, object]:
    return {name: getattr(t, name) for name in Transfer.__slots__}


def _run(opener: Callable[[], LedgerStore], examples: int) -> dict[str, int]:
    FIGURES.clear()
    LedgerMachine.open_fresh_store = staticmethod(opener)  # type: ignore[assignment]
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            derandomize=not os.environ.get("MICROPAY_HYPOTHESIS_RANDOM"),
            database=None,
        ),
    )
    figures = dict(FIGURES)
    print(f"\nstateful figures: {figures} failures=0")
    assert figures.get("examples", 0) >= 1
    assert figures.get("steps", 0) > figures["examples"]
    return figures


def test_stateful_model_sqlite(sqlite_template: Path, tmp_path: Path) -> None:
    counter = iter(range(1_000_000))

    def opener() -> LedgerStore:
        path = tmp_path / f"example-{next(counter)}.db"
        shutil.copyfile(sqlite_template, path)
        return open_store(f"sqlite:///{path}")

    _run(opener, EXAMPLES)


@pytest.fixture
def pg_reset_url(pg_schemas: PgSchemas) -> str:
    require_pg()
    return pg_schemas.new_url()


def reset_pg_schema(url: str) -> None:
    """Empty the ledger tables (tests only): the immutability triggers are bypassed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM transfers")
        conn.execute("DELETE FROM accounts")
        conn.execute("SET session_replication_role = origin")


@pytest.mark.postgres
def test_stateful_model_postgres(pg_reset_url: str) -> None:
    def opener() -> LedgerStore:
        reset_pg_schema(pg_reset_url)
        return open_store(pg_reset_url)

    _run(opener, PG_EXAMPLES)


# --- focused regressions found by the model --------------------------------

S = TransferStatus
THREE_ACCOUNTS = [
    NewAccount(1, "USD", "processor_clearing"),
    NewAccount(2, "USD", "customer_wallet", flags=1),
    NewAccount(3, "USD", "merchant_payable"),
]


def test_a_chain_with_a_replayed_failure_applies_nothing(ledger: Ledger, clock: FakeClock) -> None:
    """A linked chain applies all or nothing (core/transfers.py, core/engine.py).

    Transfer 10 failed as part of a chain and is remembered. Sent again (the same
    request) linked to a new transfer 12, it replays its failure: 10 does not
    apply, so 12 must not apply either.
    """
    model = LedgerModel()
    assert ledger.create_accounts(THREE_ACCOUNTS) == model.create_accounts(THREE_ACCOUNTS)
    first = [Transfer(10, 1, 2, 100, "USD", flags=LINKED), Transfer(11, 2, 3, 500, "USD")]
    results = ledger.submit(first)
    assert [r.status for r in results] == [S.linked_event_failed, S.exceeds_credits]
    assert results == model.submit(first, clock.now_us)
    again = [Transfer(10, 1, 2, 100, "USD", flags=LINKED), Transfer(12, 1, 3, 50, "USD")]
    results = ledger.submit(again)
    assert (results[0].status, results[0].replayed) == (S.linked_event_failed, True)
    assert not results[1].ok, "the chain's other member applied alone"
    assert ledger.accounts([3])[3].credits_posted_micros == 0
    assert results == model.submit(again, clock.now_us)
    assert reconcile(ledger.store).ok


def test_expiry_is_not_blocked_by_a_client_id_in_the_reserved_range(
    ledger: Ledger, clock: FakeClock
) -> None:
    """Ids from 2**62 are reserved for system transfers (core/limits.py), and
    expire_holds derives hold h's expiry id as 2**62 + h. A client transfer
    under that id must either be refused, or must not stop the hold expiring.
    """
    assert all(r.status is AccountStatus.ok for r in ledger.create_accounts(THREE_ACCOUNTS))
    reserved_id = 2**62 + 5
    results = ledger.submit(
        [
            Transfer(5, 1, 3, 100, "USD", flags=PENDING, timeout_s=5),
            Transfer(reserved_id, 1, 3, 7, "USD"),
        ]
    )
    assert results[0].ok
    clock.advance(10)
    expired = ledger.expire_holds()
    held = ledger.accounts([1])[1].debits_pending_micros
    assert not results[1].ok or held == 0, (
        f"hold 5 is past its timeout but still holds {held} micros; expiry gave {expired}"
    )
