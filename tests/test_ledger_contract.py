"""The store contract: the same ledger behaviour on every store."""

from __future__ import annotations

from micropay.core.accounts import AccountFlags, NewAccount, available_micros
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import Transfer, TransferFlags
from micropay.service.ledger import Ledger
from micropay.service.reconcile import reconcile

WALLET = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
S = TransferStatus


def open_basic(ledger: Ledger) -> None:
    results = ledger.create_accounts(
        [
            NewAccount(1, "USD", "processor_clearing"),
            NewAccount(2, "USD", "customer_wallet", flags=WALLET),
            NewAccount(3, "USD", "merchant_payable"),
            NewAccount(4, "EUR", "customer_wallet", flags=WALLET),
        ]
    )
    assert [r.status for r in results] == [AccountStatus.ok] * 4


def test_netted_and_exact_paths_agree_and_reconcile(ledger: Ledger) -> None:
    open_basic(ledger)
    assert ledger.submit([Transfer(10, 1, 2, 1_000_000, "USD")])[0].ok
    # Three purchases; the third overdraws: the batch takes the exact path.
    results = ledger.submit(
        [
            Transfer(11, 2, 3, 400_000, "USD"),
            Transfer(12, 2, 3, 400_000, "USD"),
            Transfer(13, 2, 3, 400_000, "USD"),
        ]
    )
    assert [r.status for r in results] == [S.ok, S.ok, S.exceeds_credits]
    wallet = ledger.accounts([2])[2]
    assert available_micros(wallet) == 200_000
    assert reconcile(ledger.store).ok


def test_failed_id_stays_failed_and_conflicts_are_refused(ledger: Ledger) -> None:
    open_basic(ledger)
    first = ledger.submit([Transfer(20, 2, 3, 5_000_000, "USD")])[0]
    assert first.status is S.exceeds_credits
    ledger.submit([Transfer(21, 1, 2, 9_000_000, "USD")])
    # Same request again: the first result, even though it would now succeed.
    again = ledger.submit([Transfer(20, 2, 3, 5_000_000, "USD")])[0]
    assert (again.status, again.replayed) == (S.exceeds_credits, True)
    changed = ledger.submit([Transfer(20, 2, 3, 1, "USD")])[0]
    assert changed.status is S.id_already_used_with_different_request
    assert ledger.accounts([3])[3].credits_posted_micros == 0
    assert reconcile(ledger.store).ok


def test_hold_post_void_expire(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    open_basic(ledger)
    ledger.submit([Transfer(30, 1, 2, 1_000_000, "USD")])
    pending = int(TransferFlags.PENDING)
    hold = Transfer(31, 2, 3, 600_000, "USD", flags=pending, timeout_s=60)
    assert ledger.submit([hold])[0].ok
    assert available_micros(ledger.accounts([2])[2]) == 400_000
    # A second hold cannot take more than is left.
    assert ledger.submit([Transfer(32, 2, 3, 500_000, "USD", flags=pending)])[0].status is (
        S.exceeds_credits
    )
    post = Transfer(33, 0, 0, 250_000, "", flags=int(TransferFlags.POST_PENDING), pending_id=31)
    void = Transfer(34, 0, 0, 0, "", flags=int(TransferFlags.VOID_PENDING), pending_id=31)
    assert [r.status for r in ledger.submit([post, void])] == [
        S.ok,
        S.pending_transfer_already_posted,
    ]
    wallet = ledger.accounts([2])[2]
    assert (wallet.debits_pending_micros, wallet.debits_posted_micros) == (0, 250_000)
    ledger.submit([Transfer(35, 2, 3, 100_000, "USD", flags=pending, timeout_s=10)])
    assert ledger.expire_holds() == []
    clock.advance(10)
    late_post = Transfer(36, 0, 0, 0, "", flags=int(TransferFlags.POST_PENDING), pending_id=35)
    assert ledger.submit([late_post])[0].status is S.pending_transfer_expired
    expired = ledger.expire_holds()
    assert [r.status for r in expired] == [S.ok]
    assert ledger.accounts([2])[2].debits_pending_micros == 0
    report = reconcile(ledger.store)
    assert report.ok, report.violations
