"""Worked examples: accounting stories, told through the real ledger on each store.

Each story opens the accounts it needs, moves money the way the product does,
checks the balances in micros (1 USD = 1_000_000 micros), and ends with
reconcile proving that nothing was created, lost or left inconsistent.

Account kinds used here, in double-entry terms:

- ``processor_clearing``: debit-normal; money that arrived through the card
  processor. It goes positive (debit balance) as customers top up.
- ``customer_wallet``: credit-normal liability, flagged "debits must not exceed
  credits": the platform owes the customer what was topped up and not spent.
- ``merchant_payable``: credit-normal liability: what the platform owes the
  merchant for sales, also flagged so a refund cannot push it below zero.
- ``platform_revenue``: credit-normal; the platform's fees.
"""

from __future__ import annotations

from conftest import FakeClock
from micropay.core.accounts import (
    AccountFlags,
    NewAccount,
    available_micros,
    credit_balance_micros,
    debit_balance_micros,
)
from micropay.core.money import format_amount, parse_amount
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import Transfer, TransferFlags
from micropay.service.ledger import Ledger, expiry_id
from micropay.service.reconcile import reconcile

S = TransferStatus
DMNEC = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
CMNED = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
LINKED = int(TransferFlags.LINKED)
PENDING = int(TransferFlags.PENDING)
POST = int(TransferFlags.POST_PENDING)
VOID = int(TransferFlags.VOID_PENDING)

CLEARING, WALLET, MERCHANT, PLATFORM = 1, 2, 3, 4


def usd(text: str) -> int:
    return parse_amount(text, "USD")


def open_accounts(ledger: Ledger, *accounts: NewAccount) -> None:
    results = ledger.create_accounts(list(accounts))
    assert [r.status for r in results] == [AccountStatus.ok] * len(accounts)


def open_shop(ledger: Ledger) -> None:
    open_accounts(
        ledger,
        NewAccount(CLEARING, "USD", "processor_clearing"),
        NewAccount(WALLET, "USD", "customer_wallet", owner_ref="cus_ada", flags=DMNEC),
        NewAccount(MERCHANT, "USD", "merchant_payable", owner_ref="acct_news", flags=DMNEC),
        NewAccount(PLATFORM, "USD", "platform_revenue"),
    )


def statuses(ledger: Ledger, *batch: Transfer) -> list[TransferStatus]:
    return [r.status for r in ledger.submit(list(batch))]


def assert_reconciled(ledger: Ledger) -> None:
    report = reconcile(ledger.store)
    assert report.ok, report.violations


def test_top_up_buy_three_articles_and_refund_one(ledger: Ledger) -> None:
    """Ada tops up 5.00 USD and buys three articles from a news site.

    The articles cost 0.10, 0.25 and 0.0004 USD (a fraction of a cent: micros
    hold it exactly). The 0.25 article is refunded with a new transfer in the
    opposite direction; the original purchase stays on record (transfers are
    immutable, a correction is a new transfer).
    """
    open_shop(ledger)
    assert statuses(ledger, Transfer(10, CLEARING, WALLET, usd("5.00"), "USD")) == [S.ok]

    purchases = [
        Transfer(11, WALLET, MERCHANT, usd("0.10"), "USD", reference="article 1"),
        Transfer(12, WALLET, MERCHANT, usd("0.25"), "USD", reference="article 2"),
        Transfer(13, WALLET, MERCHANT, usd("0.0004"), "USD", reference="article 3"),
    ]
    assert statuses(ledger, *purchases) == [S.ok] * 3
    refund = Transfer(14, MERCHANT, WALLET, usd("0.25"), "USD", reference="refund article 2")
    assert statuses(ledger, refund) == [S.ok]

    accounts = ledger.accounts([CLEARING, WALLET, MERCHANT])
    assert credit_balance_micros(accounts[WALLET]) == 5_000_000 - 100_000 - 400 == 4_899_600
    assert format_amount(credit_balance_micros(accounts[WALLET]), "USD") == "4.8996"
    assert credit_balance_micros(accounts[MERCHANT]) == 100_400
    assert debit_balance_micros(accounts[CLEARING]) == 5_000_000
    # The refunded purchase is still on record, next to its refund.
    recorded = ledger.transfers([12, 14])
    assert (recorded[12].amount_micros, recorded[14].amount_micros) == (250_000, 250_000)
    # Refunding the same article twice with the same id is a replay, not a second refund.
    again = ledger.submit([refund])[0]
    assert (again.status, again.replayed) == (S.ok, True)
    assert credit_balance_micros(ledger.accounts([WALLET])[WALLET]) == 4_899_600
    assert_reconciled(ledger)


def test_streaming_session_holds_then_posts_for_less(ledger: Ledger) -> None:
    """A video stream holds 0.50 USD up front and is posted for what was watched.

    While the hold is open Ada cannot spend the held money elsewhere. The
    session ends after 0.1234 USD of viewing: the post takes that much and
    releases the rest of the hold. A second post of the same hold is refused.
    """
    open_shop(ledger)
    statuses(ledger, Transfer(20, CLEARING, WALLET, usd("1.00"), "USD"))
    hold = Transfer(21, WALLET, MERCHANT, usd("0.50"), "USD", flags=PENDING, timeout_s=3_600)
    assert statuses(ledger, hold) == [S.ok]
    wallet = ledger.accounts([WALLET])[WALLET]
    assert available_micros(wallet) == 500_000
    assert credit_balance_micros(wallet) == 1_000_000  # held, not yet spent
    # Spending 0.60 elsewhere would eat into the hold.
    elsewhere = Transfer(22, WALLET, PLATFORM, usd("0.60"), "USD")
    assert statuses(ledger, elsewhere) == [S.exceeds_credits]

    post = Transfer(23, 0, 0, usd("0.1234"), "", flags=POST, pending_id=21)
    assert statuses(ledger, post) == [S.ok]
    accounts = ledger.accounts([WALLET, MERCHANT])
    wallet, merchant = accounts[WALLET], accounts[MERCHANT]
    assert (wallet.debits_pending_micros, wallet.debits_posted_micros) == (0, 123_400)
    assert available_micros(wallet) == 876_600
    assert (merchant.credits_pending_micros, merchant.credits_posted_micros) == (0, 123_400)
    # The stored post carries the hold's accounts and currency.
    stored = ledger.transfers([23])[23]
    assert (stored.debit_account_id, stored.credit_account_id, stored.currency) == (
        WALLET,
        MERCHANT,
        "USD",
    )
    second = Transfer(24, 0, 0, 0, "", flags=POST, pending_id=21)
    assert statuses(ledger, second) == [S.pending_transfer_already_posted]
    assert_reconciled(ledger)


def test_purchase_with_platform_fee_is_all_or_nothing(ledger: Ledger) -> None:
    """A purchase and its platform fee are linked: both move or neither does.

    Ada has 1.00 USD. The article costs 0.90 and the platform adds a 0.15 fee;
    she can afford the article but not both. The fee leg fails with
    ``exceeds_credits``, the purchase leg with ``linked_event_failed``, and no
    balance changes. The failure is remembered: retrying the same chain gets
    the same answer. A cheaper article (0.85 + 0.15) then goes through.
    """
    open_shop(ledger)
    statuses(ledger, Transfer(30, CLEARING, WALLET, usd("1.00"), "USD"))
    purchase = Transfer(31, WALLET, MERCHANT, usd("0.90"), "USD", flags=LINKED)
    fee = Transfer(32, WALLET, PLATFORM, usd("0.15"), "USD")
    assert statuses(ledger, purchase, fee) == [S.linked_event_failed, S.exceeds_credits]
    accounts = ledger.accounts([WALLET, MERCHANT, PLATFORM])
    assert credit_balance_micros(accounts[WALLET]) == 1_000_000
    assert credit_balance_micros(accounts[MERCHANT]) == 0
    assert credit_balance_micros(accounts[PLATFORM]) == 0
    assert ledger.transfers([31, 32]) == {}
    retry = ledger.submit([purchase, fee])
    assert [(r.status, r.replayed) for r in retry] == [
        (S.linked_event_failed, True),
        (S.exceeds_credits, True),
    ]

    cheaper = Transfer(33, WALLET, MERCHANT, usd("0.85"), "USD", flags=LINKED)
    fee_2 = Transfer(34, WALLET, PLATFORM, usd("0.15"), "USD")
    assert statuses(ledger, cheaper, fee_2) == [S.ok, S.ok]
    accounts = ledger.accounts([WALLET, MERCHANT, PLATFORM])
    assert credit_balance_micros(accounts[WALLET]) == 0
    assert credit_balance_micros(accounts[MERCHANT]) == 850_000
    assert credit_balance_micros(accounts[PLATFORM]) == 150_000
    assert_reconciled(ledger)


def test_a_tab_runs_up_to_its_credit_limit_then_is_settled(ledger: Ledger) -> None:
    """A reader pays later: a tab is a wallet with a 2.00 USD credit line.

    Reading goes on without any top-up; the tab goes negative up to -2.00.
    The purchase that would pass the line is refused with ``exceeds_credits``.
    At month end the processor charges the card for 2.00 and the tab is back
    at zero, with its full credit line available again.
    """
    tab = 5
    open_accounts(
        ledger,
        NewAccount(CLEARING, "USD", "processor_clearing"),
        NewAccount(MERCHANT, "USD", "merchant_payable"),
        NewAccount(tab, "USD", "customer_tab", flags=DMNEC, credit_limit_micros=usd("2.00")),
    )
    reads = [Transfer(40 + i, tab, MERCHANT, usd("0.25"), "USD") for i in range(8)]
    assert statuses(ledger, *reads) == [S.ok] * 8
    account = ledger.accounts([tab])[tab]
    assert credit_balance_micros(account) == -2_000_000
    assert available_micros(account) == 0
    one_more = Transfer(48, tab, MERCHANT, 1, "USD")
    assert statuses(ledger, one_more) == [S.exceeds_credits]
    assert credit_balance_micros(ledger.accounts([tab])[tab]) == -2_000_000

    settle = Transfer(49, CLEARING, tab, usd("2.00"), "USD", reference="ch_month_end")
    assert statuses(ledger, settle) == [S.ok]
    account = ledger.accounts([tab])[tab]
    assert credit_balance_micros(account) == 0
    assert available_micros(account) == 2_000_000
    assert credit_balance_micros(ledger.accounts([MERCHANT])[MERCHANT]) == 2_000_000
    assert_reconciled(ledger)


def test_an_abandoned_hold_expires_and_releases_the_money(ledger: Ledger, clock: FakeClock) -> None:
    """A checkout holds 0.30 USD for 30 seconds and is abandoned.

    At 29 seconds nothing expires. At 30 seconds the expiry job releases the
    hold with a transfer whose id is derived from the hold's, so running the
    job twice cannot expire it twice. Posting the hold afterwards is refused
    with ``pending_transfer_expired``; Ada's money is all available again.
    """
    open_shop(ledger)
    statuses(ledger, Transfer(50, CLEARING, WALLET, usd("1.00"), "USD"))
    hold = Transfer(51, WALLET, MERCHANT, usd("0.30"), "USD", flags=PENDING, timeout_s=30)
    assert statuses(ledger, hold) == [S.ok]
    assert available_micros(ledger.accounts([WALLET])[WALLET]) == 700_000

    clock.advance(29)
    assert ledger.expire_holds() == []
    clock.advance(1)
    expired = ledger.expire_holds()
    assert [(r.id, r.status) for r in expired] == [(expiry_id(51), S.ok)]
    assert ledger.expire_holds() == []

    wallet = ledger.accounts([WALLET])[WALLET]
    assert (wallet.debits_pending_micros, wallet.debits_posted_micros) == (0, 0)
    assert available_micros(wallet) == 1_000_000
    merchant = ledger.accounts([MERCHANT])[MERCHANT]
    assert (merchant.credits_pending_micros, merchant.credits_posted_micros) == (0, 0)
    late_post = Transfer(52, 0, 0, 0, "", flags=POST, pending_id=51)
    assert statuses(ledger, late_post) == [S.pending_transfer_expired]
    late_void = Transfer(53, 0, 0, 0, "", flags=VOID, pending_id=51)
    assert statuses(ledger, late_void) == [S.pending_transfer_expired]
    assert_reconciled(ledger)


def test_a_bank_account_cannot_pay_out_more_than_it_received(ledger: Ledger) -> None:
    """The mirror rule: the platform's bank account is debit-normal.

    Flagged "credits must not exceed debits", it can send out (be credited)
    only what came in (was debited). The processor settles 2.00 USD into the
    bank; a creator is owed 3.00. Paying out 3.00 is refused with
    ``exceeds_debits``; paying out the 2.00 the bank holds succeeds and leaves
    it at zero, with 1.00 still owed to the creator.
    """
    bank, creator = 6, 7
    open_accounts(
        ledger,
        NewAccount(CLEARING, "USD", "processor_clearing"),
        NewAccount(bank, "USD", "bank", flags=CMNED),
        NewAccount(creator, "USD", "creator_payable", owner_ref="creator_bo"),
    )
    # The creator earned 3.00 (from sales, cleared through the processor).
    statuses(ledger, Transfer(60, CLEARING, creator, usd("3.00"), "USD"))
    # The processor pays 2.00 out to the bank: debit bank, credit clearing.
    assert statuses(ledger, Transfer(61, bank, CLEARING, usd("2.00"), "USD")) == [S.ok]

    payout_all = Transfer(62, creator, bank, usd("3.00"), "USD")
    assert statuses(ledger, payout_all) == [S.exceeds_debits]
    payout = Transfer(63, creator, bank, usd("2.00"), "USD")
    assert statuses(ledger, payout) == [S.ok]

    accounts = ledger.accounts([bank, creator, CLEARING])
    assert debit_balance_micros(accounts[bank]) == 0
    assert credit_balance_micros(accounts[creator]) == 1_000_000
    assert debit_balance_micros(accounts[CLEARING]) == 1_000_000
    assert_reconciled(ledger)
