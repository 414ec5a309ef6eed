"""The plain path (``settle_plain``) gives the engine's outcome for plain batches.

A differential property: for any accounts (some missing, any flags, limits and
counters up to the 64-bit edge) and any batch of plain single transfers,
``settle_plain`` returns what :func:`apply_batch` does with no ids recorded:
the same results, the same rows applied and remembered, the same deltas.
Then the ledger-level check that a batch of refusals goes through the plain
path and stays equal to the exact path on a real store.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from micropay.core.accounts import Account, NewAccount
from micropay.core.engine import LedgerView, apply_batch
from micropay.core.limits import amount_micros_max
from micropay.core.netting import account_state, plan_netted, settle_plain
from micropay.core.statuses import TransferStatus
from micropay.core.transfers import Transfer, TransferFlags
from micropay.service.ledger import Ledger

NOW = 1_700_000_000_000_000
MAX = amount_micros_max
# Small ranges, so that every boundary (a sum equal to a limit or to the 64-bit
# edge) comes up often.
counter = st.one_of(st.integers(0, 40), st.integers(0, 40), st.integers(MAX - 60, MAX))
amount = st.integers(1, 30)
currency = st.sampled_from(["USD", "USD", "USD", "EUR"])


@st.composite
def accounts(draw: Any) -> dict[int, Account]:
    found: dict[int, Account] = {}
    missing = draw(st.sets(st.integers(1, 6), max_size=1))
    for account_id in set(range(1, 7)) - missing:
        dp, dpo, cp, cpo = (draw(counter) for _ in range(4))
        found[account_id] = Account(
            id=account_id,
            currency=draw(currency),
            kind="test",
            owner_ref="",
            flags=draw(st.integers(0, 3)),
            credit_limit_micros=draw(st.integers(0, 60)),
            debits_pending_micros=dp,
            debits_posted_micros=dpo,
            credits_pending_micros=cp,
            credits_posted_micros=cpo,
            created_at_us=1,
        )
    return found


@st.composite
def plain_batches(draw: Any) -> list[Transfer]:
    size = draw(st.integers(1, 12))
    batch = []
    for index in range(size):
        debit = draw(st.integers(1, 6))
        credit = draw(st.integers(1, 6).filter(lambda c, d=debit: c != d))
        batch.append(
            Transfer(
                id=100 + index,
                debit_account_id=debit,
                credit_account_id=credit,
                amount_micros=draw(amount),
                currency=draw(st.sampled_from(["USD"] * 7 + ["EUR"])),
                code=draw(st.integers(0, 3)),
                reference=draw(st.sampled_from(["", "ref"])),
            )
        )
    return batch


@settings(max_examples=600, deadline=None)
@given(accounts(), plain_batches())
def test_settle_plain_equals_the_engine(found: dict[int, Account], batch: list[Transfer]) -> None:
    plan = plan_netted(batch, NOW)
    if plan is None:  # e.g. an account's sums overflow: the exact path reports it
        return
    outcome = settle_plain(plan, {i: account_state(a) for i, a in found.items()})
    assert outcome is not None
    expected = apply_batch(batch, LedgerView(found, {}, {}, {}), NOW)
    assert outcome.results == expected.results
    assert [row[0] for row in outcome.accepted] == [t.id for t in expected.transfers]
    for row, stored in zip(outcome.accepted, expected.transfers, strict=True):
        assert row == (
            stored.id,
            stored.debit_account_id,
            stored.credit_account_id,
            stored.amount_micros,
            stored.currency,
            stored.code,
            stored.flags,
            stored.reference,
            stored.metadata,
            stored.created_at_us,
        )
    assert [(row[0], row[10]) for row in outcome.rejected] == [
        (r.request.id, r.status.value) for r in expected.rejections
    ]
    assert outcome.deltas == expected.deltas


def test_a_linked_chain_is_left_to_the_engine() -> None:
    linked = int(TransferFlags.LINKED)
    batch = [Transfer(1, 1, 2, 5, "USD", 0, flags=linked), Transfer(2, 2, 1, 5, "USD", 0)]
    plan = plan_netted(batch, NOW)
    assert plan is not None
    assert settle_plain(plan, {}) is None


def test_a_batch_that_overdraws_takes_the_plain_path_and_matches_the_exact_one(
    store: Any,
) -> None:
    exact = Ledger(store, netted=False)
    dmnec = 1
    opened = exact.create_accounts(
        [
            NewAccount(1, "USD", "world"),
            NewAccount(2, "USD", "wallet", flags=dmnec),
            NewAccount(3, "USD", "merchant"),
        ]
    )
    assert all(r.status.value == "ok" for r in opened)
    assert exact.submit([Transfer(1, 1, 2, 1_000, "USD", 0)])[0].ok
    ledger = Ledger(store)
    # The wallet holds 1,000: the guard refuses the batch, the plain path settles it.
    batch = [Transfer(10 + i, 2, 3, 300, "USD", 0) for i in range(5)]
    results = ledger.submit(batch)
    assert [r.status for r in results] == [TransferStatus.ok] * 3 + [
        TransferStatus.exceeds_credits
    ] * 2
    assert ledger.stats == {"netted": 0, "plain": 1, "exact": 0, "retries": 0}
    # Replayed: ids are taken, so the plain write is refused and the exact path replays.
    again = ledger.submit(batch)
    assert [(r.status, r.replayed) for r in again] == [(r.status, True) for r in results]
    assert ledger.stats["exact"] == 1
    balances = ledger.accounts([2, 3])
    assert balances[2].debits_posted_micros == 900
    assert balances[3].credits_posted_micros == 900
