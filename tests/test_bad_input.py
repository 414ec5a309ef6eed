"""Bad input: every limit at the limit and one past it, wrong types, bad text.

Each case ends the same way: a clear status (or ``BatchTooLarge`` for a batch
past its size), nothing written (account counters unchanged, the id not
recorded as a transfer) and reconcile clean. The limits come from
``micropay.core.limits``; a limit changed there moves these tests with it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from conftest import FakeClock
from micropay.core import limits
from micropay.core.accounts import AccountFlags, NewAccount
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import Transfer, TransferFlags
from micropay.service.ledger import BatchTooLarge, Ledger, expiry_id
from micropay.service.reconcile import reconcile

S = TransferStatus
A = AccountStatus
MAX = limits.amount_micros_max
PENDING = int(TransferFlags.PENDING)
SOURCE, SINK, WALLET, BIG_SOURCE, BIG_SINK = 1, 2, 3, 4, 5
ACCOUNT_IDS = [SOURCE, SINK, WALLET, BIG_SOURCE, BIG_SINK]
Counters = dict[int, tuple[int, int, int, int]]


def open_accounts(ledger: Ledger) -> None:
    results = ledger.create_accounts(
        [
            NewAccount(SOURCE, "USD", "processor_clearing"),
            NewAccount(SINK, "USD", "merchant_payable"),
            NewAccount(
                WALLET,
                "USD",
                "customer_wallet",
                flags=int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
            ),
            # For amounts at amount_micros_max, apart from the small USD movements.
            NewAccount(BIG_SOURCE, "EUR", "processor_clearing"),
            NewAccount(BIG_SINK, "EUR", "merchant_payable"),
        ]
    )
    assert all(r.status is A.ok for r in results)


def counters(ledger: Ledger) -> Counters:
    return {
        i: (
            a.debits_pending_micros,
            a.debits_posted_micros,
            a.credits_pending_micros,
            a.credits_posted_micros,
        )
        for i, a in ledger.accounts(ACCOUNT_IDS).items()
    }


def account_count(ledger: Ledger) -> int:
    return reconcile(ledger.store).accounts


def transfer(transfer_id: object = 100, **fields: object) -> Transfer:
    values: dict[str, object] = {
        "debit_account_id": SOURCE,
        "credit_account_id": SINK,
        "amount_micros": 1,
        "currency": "USD",
    }
    values.update(fields)
    return Transfer(transfer_id, **values)  # type: ignore[arg-type]


def assert_nothing_written(ledger: Ledger, before: Counters, ids: list[int]) -> None:
    assert counters(ledger) == before
    assert ledger.transfers(ids) == {}
    report = reconcile(ledger.store)
    assert report.ok, report.violations


def assert_rejected(ledger: Ledger, t: Transfer, status: TransferStatus) -> None:
    before = counters(ledger)
    results = ledger.submit([t])
    assert [r.status for r in results] == [status]
    ids = [t.id] if type(t.id) is int else []
    assert_nothing_written(ledger, before, ids)


def assert_accepted(ledger: Ledger, t: Transfer) -> None:
    assert [r.status for r in ledger.submit([t])] == [S.ok]
    assert t.id in ledger.transfers([t.id])


# --- batch sizes -------------------------------------------------------------------


def test_batch_transfers_max(ledger: Ledger) -> None:
    open_accounts(ledger)
    n = limits.batch_transfers_max
    at_limit = [transfer(1_000 + i) for i in range(n)]
    results = ledger.submit(at_limit)
    assert len(results) == n
    assert all(r.ok for r in results)
    assert ledger.accounts([SINK])[SINK].credits_posted_micros == n

    before = counters(ledger)
    past = [transfer(20_000 + i) for i in range(n + 1)]
    with pytest.raises(BatchTooLarge):
        ledger.submit(past)
    assert_nothing_written(ledger, before, [20_000, 20_000 + n // 2, 20_000 + n])


def test_batch_accounts_max(ledger: Ledger) -> None:
    n = limits.batch_accounts_max
    at_limit = [NewAccount(10_000 + i, "USD", "customer_wallet") for i in range(n)]
    results = ledger.create_accounts(at_limit)
    assert len(results) == n
    assert all(r.status is A.ok for r in results)
    assert account_count(ledger) == n

    past = [NewAccount(30_000 + i, "USD", "customer_wallet") for i in range(n + 1)]
    with pytest.raises(BatchTooLarge):
        ledger.create_accounts(past)
    assert account_count(ledger) == n
    assert ledger.accounts([30_000, 30_000 + n]) == {}


def test_empty_batch_is_a_no_op(ledger: Ledger) -> None:
    assert ledger.submit([]) == []
    assert ledger.create_accounts([]) == []
    assert reconcile(ledger.store).ok


# --- each field limit, at the limit and one past ------------------------------------

BIG: dict[str, object] = {
    "debit_account_id": BIG_SOURCE,
    "credit_account_id": BIG_SINK,
    "currency": "EUR",
}
LIMIT_CASES = [
    # (name, accepted at the limit, refused one past, status)
    (
        "reference_chars_max",
        transfer(reference="r" * limits.reference_chars_max),
        transfer(reference="r" * (limits.reference_chars_max + 1)),
        S.reference_too_long,
    ),
    (
        "reference_chars_max counts characters, not bytes",
        transfer(reference="€" * limits.reference_chars_max),
        transfer(reference="€" * (limits.reference_chars_max + 1)),
        S.reference_too_long,
    ),
    (
        "metadata_bytes_max counts UTF-8 bytes",
        transfer(metadata="é" * (limits.metadata_bytes_max // 2)),
        transfer(metadata="é" * (limits.metadata_bytes_max // 2) + "x"),
        S.metadata_too_large,
    ),
    (
        "code_max",
        transfer(code=limits.code_max),
        transfer(code=limits.code_max + 1),
        S.code_must_be_in_range,
    ),
    ("code_min", transfer(code=0), transfer(code=-1), S.code_must_be_in_range),
    (
        "timeout_s_max",
        transfer(flags=PENDING, timeout_s=limits.timeout_s_max),
        transfer(flags=PENDING, timeout_s=limits.timeout_s_max + 1),
        S.timeout_must_be_in_range,
    ),
    (
        "client_id_max",
        transfer(limits.client_id_max),
        transfer(limits.client_id_max + 1),
        S.id_reserved_for_system,
    ),
    ("id_min", transfer(limits.id_min), transfer(limits.id_min - 1), S.id_must_be_positive),
    (
        "amount_micros_max",
        transfer(amount_micros=MAX, **BIG),
        transfer(amount_micros=MAX + 1, **BIG),
        S.amount_exceeds_max,
    ),
    ("amount min", transfer(amount_micros=1), transfer(amount_micros=0), S.amount_must_be_positive),
]


def test_field_limits(ledger: Ledger) -> None:
    """Each limit: one past it is refused and writes nothing; at it, accepted.

    One past goes first: a request-check failure is not remembered, so the
    request at the limit may then use the same id. Cases get their own ids
    (except where the id is the field under test) and share one ledger.
    """
    open_accounts(ledger)
    for number, (name, at_case, past_case, status) in enumerate(LIMIT_CASES):
        assert not status.is_remembered, name
        at_limit, past_limit = at_case, past_case
        if at_case.id == past_case.id:
            at_limit = replace(at_case, id=1_000 + number)
            past_limit = replace(past_case, id=1_000 + number)
        assert_rejected(ledger, past_limit, status)
        assert_accepted(ledger, at_limit)
    report = reconcile(ledger.store)
    assert report.ok, report.violations


def test_account_id_limits(ledger: Ledger) -> None:
    at_limit = NewAccount(limits.id_max, "USD", "customer_wallet")
    assert ledger.create_accounts([at_limit])[0].status is A.ok
    for bad, status in [
        (limits.id_max + 1, A.id_must_not_exceed_max),
        (0, A.id_must_be_positive),
        (-1, A.id_must_be_positive),
        (1.0, A.id_must_be_positive),
        (True, A.id_must_be_positive),
        ("5", A.id_must_be_positive),
        (None, A.id_must_be_positive),
    ]:
        result = ledger.create_accounts([NewAccount(bad, "USD", "customer_wallet")])[0]  # type: ignore[arg-type]
        assert result.status is status, bad
    assert account_count(ledger) == 1
    # A transfer may name the largest account id; one past it is refused.
    assert_rejected(
        ledger, transfer(debit_account_id=limits.id_max + 1), S.debit_account_id_must_be_positive
    )


def test_account_text_limits(ledger: Ledger) -> None:
    kind_max = "k" * limits.account_kind_chars_max
    owner_max = "o" * limits.owner_ref_chars_max
    ok = ledger.create_accounts([NewAccount(1, "USD", kind_max, owner_ref=owner_max)])
    assert ok[0].status is A.ok
    bad = [
        (NewAccount(2, "USD", kind_max + "k"), A.kind_must_be_valid),
        (NewAccount(3, "USD", "w", owner_ref=owner_max + "o"), A.owner_ref_too_long),
        (NewAccount(4, "USD", "w", owner_ref="a\x00b"), A.text_must_be_valid),
        (NewAccount(5, "USD", "w", owner_ref="\udc80"), A.text_must_be_valid),
        (NewAccount(6, "USD", "w", owner_ref=None), A.text_must_be_valid),  # type: ignore[arg-type]
        (NewAccount(7, "XYZ", "w"), A.currency_must_be_valid),
        (NewAccount(8, "usd", "w"), A.currency_must_be_valid),
        (NewAccount(9, None, "w"), A.currency_must_be_valid),  # type: ignore[arg-type]
        (
            NewAccount(10, "USD", "w", flags=1, credit_limit_micros=MAX + 1),
            A.credit_limit_must_be_in_range,
        ),
        (
            NewAccount(11, "USD", "w", flags=1, credit_limit_micros=1.5),  # type: ignore[arg-type]
            A.credit_limit_must_be_in_range,
        ),
    ]
    results = ledger.create_accounts([request for request, _ in bad])
    assert [r.status for r in results] == [status for _, status in bad]
    assert account_count(ledger) == 1
    assert reconcile(ledger.store).ok


# --- wrong types and bad values -------------------------------------------------------

BAD_TRANSFERS = [
    ("amount float", transfer(amount_micros=1.0), S.amount_must_be_an_int),
    ("amount nan", transfer(amount_micros=float("nan")), S.amount_must_be_an_int),
    ("amount inf", transfer(amount_micros=float("inf")), S.amount_must_be_an_int),
    ("amount bool", transfer(amount_micros=True), S.amount_must_be_an_int),
    ("amount str", transfer(amount_micros="1"), S.amount_must_be_an_int),
    ("amount none", transfer(amount_micros=None), S.amount_must_be_an_int),
    ("amount negative", transfer(amount_micros=-5), S.amount_must_be_positive),
    ("id float", transfer(100.0), S.id_must_be_positive),
    ("id bool", transfer(True), S.id_must_be_positive),
    ("id str", transfer("100"), S.id_must_be_positive),
    ("id none", transfer(None), S.id_must_be_positive),
    ("debit float", transfer(debit_account_id=1.0), S.debit_account_id_must_be_positive),
    ("debit str", transfer(debit_account_id="1"), S.debit_account_id_must_be_positive),
    ("debit none", transfer(debit_account_id=None), S.debit_account_id_must_be_positive),
    ("credit bool", transfer(credit_account_id=True), S.credit_account_id_must_be_positive),
    ("credit negative", transfer(credit_account_id=-2), S.credit_account_id_must_be_positive),
    ("code float", transfer(code=1.0), S.code_must_be_in_range),
    ("timeout float", transfer(flags=PENDING, timeout_s=1.0), S.timeout_must_be_in_range),
    ("flags str", transfer(flags="2"), S.flags_are_unknown),
    ("currency unknown", transfer(currency="XYZ"), S.currency_must_be_valid),
    ("currency lowercase", transfer(currency="usd"), S.currency_must_be_valid),
    ("currency none", transfer(currency=None), S.currency_must_be_valid),
    ("currency empty", transfer(currency=""), S.currency_must_be_valid),
    ("reference nul", transfer(reference="a\x00b"), S.text_must_be_valid),
    ("reference lone surrogate", transfer(reference="\ud800"), S.text_must_be_valid),
    ("metadata nul", transfer(metadata='{"k":"\x00"}'), S.text_must_be_valid),
    ("metadata lone surrogate", transfer(metadata="\udfff"), S.text_must_be_valid),
    ("metadata bytes", transfer(metadata=b"{}"), S.text_must_be_valid),
    ("reference none", transfer(reference=None), S.text_must_be_valid),
]


def test_bad_transfers(ledger: Ledger) -> None:
    """Each bad request gets its status and writes nothing; the corrected one may reuse the id."""
    open_accounts(ledger)
    problems = []
    for number, (name, case, status) in enumerate(BAD_TRANSFERS):
        bad = replace(case, id=1_000 + number) if type(case.id) is int else case
        before = counters(ledger)
        got = [r.status for r in ledger.submit([bad])]
        if got != [status]:
            problems.append(f"{name}: got {got}")
        if counters(ledger) != before:
            problems.append(f"{name}: counters moved")
        if type(bad.id) is int:
            if ledger.transfers([bad.id]):
                problems.append(f"{name}: recorded")
            # Request-check failures are not remembered: the corrected request may use the id.
            if not ledger.submit([transfer(bad.id)])[0].ok:
                problems.append(f"{name}: corrected request refused")
    assert problems == []
    report = reconcile(ledger.store)
    assert report.ok, report.violations


def test_one_bad_transfer_does_not_spoil_its_neighbours(ledger: Ledger) -> None:
    """Outside a linked chain each transfer stands alone (and the batch leaves the fast path)."""
    open_accounts(ledger)
    results = ledger.submit([transfer(1), transfer(2, amount_micros=1.0), transfer(3)])
    assert [r.status for r in results] == [S.ok, S.amount_must_be_an_int, S.ok]
    assert set(ledger.transfers([1, 2, 3])) == {1, 3}
    assert reconcile(ledger.store).ok


def test_unknown_accounts(ledger: Ledger) -> None:
    open_accounts(ledger)
    assert_rejected(ledger, transfer(101, debit_account_id=77), S.debit_account_not_found)
    assert_rejected(ledger, transfer(102, credit_account_id=77), S.credit_account_not_found)
    assert account_count(ledger) == len(ACCOUNT_IDS)
    # A state-check failure is remembered: opening the account later does not revive the id.
    ledger.create_accounts([NewAccount(77, "USD", "merchant_payable")])
    again = ledger.submit([transfer(101, debit_account_id=77)])[0]
    assert (again.status, again.replayed) == (S.debit_account_not_found, True)
    assert ledger.transfers([101]) == {}


def test_overdraft_is_refused_and_leaves_the_wallet_as_it_was(ledger: Ledger) -> None:
    open_accounts(ledger)
    assert_accepted(ledger, transfer(1, credit_account_id=WALLET, amount_micros=1_000))
    assert_rejected(
        ledger, transfer(2, debit_account_id=WALLET, amount_micros=1_001), S.exceeds_credits
    )
    assert_accepted(ledger, transfer(3, debit_account_id=WALLET, amount_micros=1_000))


def test_reconcile_survives_currency_totals_past_int64(ledger: Ledger) -> None:
    """Two transfers at amount_micros_max between different accounts are each legal.

    Every account stays within int64, but the currency's total does not.
    """
    ledger.create_accounts([NewAccount(i, "USD", "processor_clearing") for i in (1, 2, 3, 4)])
    results = ledger.submit(
        [
            transfer(1, amount_micros=MAX),
            transfer(2, debit_account_id=3, credit_account_id=4, amount_micros=MAX),
        ]
    )
    assert [r.status for r in results] == [S.ok, S.ok]
    report = reconcile(ledger.store)
    assert report.ok, report.violations


def test_a_client_cannot_block_a_hold_from_expiring(ledger: Ledger, clock: FakeClock) -> None:
    """Ids from ``system_id_min`` up are the expiry job's (limits.py): clients may not use them.

    Otherwise a client that sends the expiry job's exact request before the
    hold's timeout gets ``pending_transfer_not_expired`` remembered under the
    job's id, every later expiry run replays that failure, and the customer's
    money stays held for good (posting it is refused as expired).
    """
    open_accounts(ledger)
    assert_accepted(ledger, transfer(1, credit_account_id=WALLET, amount_micros=1_000))
    hold = transfer(2, debit_account_id=WALLET, amount_micros=600, flags=PENDING, timeout_s=10)
    assert_accepted(ledger, hold)
    early = Transfer(
        expiry_id(2), 0, 0, 0, "", flags=int(TransferFlags.EXPIRE_PENDING), pending_id=2
    )
    [refused] = ledger.submit([early])
    assert refused.status is S.id_reserved_for_system
    clock.advance(10)
    ledger.expire_holds()
    assert ledger.accounts([WALLET])[WALLET].debits_pending_micros == 0
