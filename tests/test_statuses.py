"""Statuses, one table row per status, in the order of precedence.

Each row builds a *probe* that fails its status's check, and where practical a
*repaired* probe: the same request with only that first cause removed, which
then fails a check that comes later in the order. The pair proves the order
(the probe failed both checks, and the earlier one won), not just that the
status exists. Every row runs through the real :class:`Ledger` on each store;
after it, nothing has moved and reconcile is clean. Request-check rows write
nothing, so they share one ledger per store; state-check rows, which need
their own holds and counters, get a fresh ledger each.

Two coverage tests make adding a status without a row fail: one for
:class:`TransferStatus`, one for :class:`AccountStatus`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from conftest import FakeClock
from micropay.core import limits
from micropay.core.accounts import AccountFlags, NewAccount
from micropay.core.engine import LedgerView, apply_batch, validate_request
from micropay.core.statuses import AccountStatus, TransferStatus, precedence
from micropay.core.transfers import Transfer, TransferFlags
from micropay.service.ledger import Ledger
from micropay.service.reconcile import reconcile

S = TransferStatus
MAX = limits.amount_micros_max
LINKED = int(TransferFlags.LINKED)
PENDING = int(TransferFlags.PENDING)
POST = int(TransferFlags.POST_PENDING)
VOID = int(TransferFlags.VOID_PENDING)
EXPIRE = int(TransferFlags.EXPIRE_PENDING)
WALLET = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
MIRROR = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)

# The accounts every row starts with.
CLEARING, CLEARING_2, MERCHANT, WALLET_ID, BANK, EUR_1 = 10, 11, 12, 13, 14, 20
ACCOUNTS = [
    NewAccount(CLEARING, "USD", "processor_clearing"),
    NewAccount(CLEARING_2, "USD", "processor_clearing"),
    NewAccount(MERCHANT, "USD", "merchant_payable"),
    NewAccount(WALLET_ID, "USD", "customer_wallet", flags=WALLET),  # empty
    NewAccount(BANK, "USD", "bank", flags=MIRROR),  # may not be credited past its debits
    NewAccount(EUR_1, "EUR", "processor_clearing"),
]
ACCOUNT_IDS = [a.id for a in ACCOUNTS]

HOLD, HOLD_2, SINGLE = 900, 901, 902  # transfers some setups record
PROBE_ID, REPAIRED_ID = 500, 501


def usd(
    transfer_id: int = PROBE_ID,
    debit: object = CLEARING,
    credit: object = MERCHANT,
    amount: object = 1,
    currency: object = "USD",
    **fields: object,
) -> Transfer:
    return Transfer(transfer_id, debit, credit, amount, currency, **fields)  # type: ignore[arg-type]


def resolve(flags: int, pending_id: int, amount: int = 0, **fields: object) -> Transfer:
    """A post/void/expire that leaves accounts and currency to the hold."""
    base = {"debit": 0, "credit": 0, "amount": amount, "currency": "", "flags": flags}
    base.update(fields)
    return usd(pending_id=pending_id, **base)  # type: ignore[arg-type]


Setup = Callable[[Ledger, FakeClock], None]


def ok(ledger: Ledger, *batch: Transfer) -> None:
    results = ledger.submit(list(batch))
    assert all(r.ok for r in results), results


def no_setup(ledger: Ledger, clock: FakeClock) -> None:
    pass


def hold_open(ledger: Ledger, clock: FakeClock) -> None:
    ok(ledger, usd(HOLD, amount=100, flags=PENDING, timeout_s=10))


def hold_and_single(ledger: Ledger, clock: FakeClock) -> None:
    hold_open(ledger, clock)
    ok(ledger, usd(SINGLE, amount=100))


def hold_voided(ledger: Ledger, clock: FakeClock) -> None:
    hold_open(ledger, clock)
    ok(ledger, resolve(VOID, HOLD, transfer_id=903))


def hold_posted(ledger: Ledger, clock: FakeClock) -> None:
    hold_open(ledger, clock)
    ok(ledger, resolve(POST, HOLD, transfer_id=903))


def posted_then_time_passes(ledger: Ledger, clock: FakeClock) -> None:
    ok(ledger, usd(HOLD_2, amount=100, flags=PENDING, timeout_s=10))
    hold_posted(ledger, clock)
    clock.advance(10)


def voided_then_time_passes(ledger: Ledger, clock: FakeClock) -> None:
    ok(ledger, usd(HOLD_2, amount=100, flags=PENDING, timeout_s=10))
    hold_voided(ledger, clock)
    clock.advance(10)


def hold_times_out(ledger: Ledger, clock: FakeClock) -> None:
    hold_open(ledger, clock)
    clock.advance(10)


def hold_expired_by_job(ledger: Ledger, clock: FakeClock) -> None:
    hold_times_out(ledger, clock)
    assert [r.status for r in ledger.expire_holds()] == [S.ok]


def long_hold(ledger: Ledger, clock: FakeClock) -> None:
    ok(ledger, usd(HOLD, amount=100, flags=PENDING, timeout_s=3_600))


def id_recorded(ledger: Ledger, clock: FakeClock) -> None:
    ok(ledger, usd(PROBE_ID, amount=7))


def pending_counters_full(ledger: Ledger, clock: FakeClock) -> None:
    # CLEARING has debits_pending = MAX, MERCHANT credits_pending = MAX.
    ok(ledger, usd(HOLD, amount=MAX, flags=PENDING))


def posted_counters_full(ledger: Ledger, clock: FakeClock) -> None:
    ok(ledger, usd(SINGLE, amount=MAX))


def pending_plus_posted_full(ledger: Ledger, clock: FakeClock) -> None:
    # Neither counter alone is full, their sum is: H + P = MAX on both sides.
    held = MAX // 2
    ok(ledger, usd(HOLD, amount=held, flags=PENDING))
    ok(ledger, usd(SINGLE, amount=MAX - held))


def clock_near_end_of_time(ledger: Ledger, clock: FakeClock) -> None:
    clock.now_us = MAX - 5 * 1_000_000


@dataclass(frozen=True)
class Row:
    """``probe[-1]`` gets ``status``; ``repaired[-1]`` (earlier cause removed) gets ``later``."""

    status: TransferStatus
    probe: tuple[Transfer, ...]
    later: TransferStatus | None = None
    repaired: tuple[Transfer, ...] = ()
    setup: Setup = no_setup
    note: str = ""
    system: bool = False  # submitted as the system's own transfer (Ledger.submit_system)

    @property
    def id(self) -> str:
        return self.status.value + (f"-{self.note}" if self.note else "")


def row(
    status: TransferStatus,
    probe: Transfer | tuple[Transfer, ...],
    later: TransferStatus | None = None,
    repaired: Transfer | tuple[Transfer, ...] = (),
    setup: Setup = no_setup,
    note: str = "",
    system: bool = False,
) -> Row:
    as_tuple = lambda x: x if isinstance(x, tuple) else (x,)  # noqa: E731
    return Row(status, as_tuple(probe), later, as_tuple(repaired), setup, note, system)


def fix(t: Transfer, **changes: object) -> Transfer:
    """The probe with one cause removed, under a fresh id (a failed id may be remembered)."""
    changes.setdefault("id", REPAIRED_ID)
    return replace(t, **changes)  # type: ignore[arg-type]


# One probe per status, in the order of precedence. ``p`` names the probe, ``fix``
# removes the cause of ``status`` and leaves the later failure in place.
_p = {
    "chain_failed": (
        usd(499, amount=0, flags=LINKED),
        usd(currency="XYZ", flags=LINKED),
    ),
    "chain_open": usd(0, flags=LINKED),
    "id0": usd(0, flags=1 << 9),
    "id_big": usd(limits.id_max + 1, flags=1 << 9),
    "id_system": usd(limits.system_id_min, flags=1 << 9),
    "expire_client": usd(debit=-1, flags=EXPIRE),
    "flags_unknown": usd(flags=(1 << 9) | PENDING | POST),
    "flags_exclusive": usd(debit=-1, flags=PENDING | VOID),
    "debit0": usd(debit=0, credit=0),
    "credit0": usd(credit=0, pending_id=5),
    "same": usd(credit=CLEARING, pending_id=5),
    "pending_not_zero": usd(pending_id=5, timeout_s=-1),
    "pending_id0": resolve(POST, 0, timeout_s=5),
    "pending_self": resolve(POST, PROBE_ID, timeout_s=5),
    "timeout_single": usd(timeout_s=-1),
    "timeout_range": usd(flags=PENDING, timeout_s=limits.timeout_s_max + 1, amount="1"),
    "amount_float": usd(amount=1.5, currency="XYZ"),
    "amount_zero": usd(amount=0, currency="XYZ"),
    "amount_big": usd(amount=MAX + 1, currency="XYZ"),
    "currency": usd(currency="XYZ", code=-1),
    "code": usd(code=limits.code_max + 1, reference="\x00"),
    "text": usd(reference="\x00" * (limits.reference_chars_max + 1)),
    "reference": usd(
        reference="r" * (limits.reference_chars_max + 1),
        metadata="m" * (limits.metadata_bytes_max + 1),
    ),
    "metadata": usd(debit=999, metadata="é" * (limits.metadata_bytes_max // 2) + "m"),
    "id_used": usd(debit=999),
    "not_found": resolve(POST, 777, debit=MERCHANT),
    "not_pending": resolve(POST, SINGLE, debit=MERCHANT),
    "other_debit": resolve(POST, HOLD, debit=MERCHANT, credit=CLEARING),
    "other_credit": resolve(POST, HOLD, credit=CLEARING, currency="EUR"),
    "other_currency": resolve(POST, HOLD, 101, currency="EUR"),
    "exceeds_hold": resolve(POST, HOLD, 101),
    "other_amount": resolve(VOID, HOLD, 50),
    "posted": resolve(VOID, HOLD),
    "voided": resolve(POST, HOLD),
    "late": resolve(POST, HOLD),
    "early": resolve(EXPIRE, HOLD),
    "debit_missing": usd(debit=998, credit=999),
    "credit_missing": usd(credit=999, currency="GBP"),
    "mixed_accounts": usd(credit=EUR_1, currency="GBP"),
    "foreign": usd(debit=WALLET_ID, currency="EUR"),
    "dp_full": usd(flags=PENDING),
    "cp_full": usd(debit=CLEARING_2, flags=PENDING),
    "dpo_full": usd(),
    "cpo_full": usd(debit=CLEARING_2),
    "debits_full": usd(),
    "credits_full": usd(debit=WALLET_ID),
    "timeout_overflow": usd(debit=WALLET_ID, flags=PENDING, timeout_s=10),
    "overdraw": usd(debit=WALLET_ID, credit=BANK),
    "bank_overpaid": usd(credit=BANK),
}

ROWS: list[Row] = [
    row(
        S.linked_event_failed,
        _p["chain_failed"],
        S.linked_event_chain_open,
        fix(_p["chain_failed"][1]),
        note="beats own open chain and bad currency",
    ),
    row(
        S.linked_event_chain_open,
        _p["chain_open"],
        S.id_must_be_positive,
        fix(_p["chain_open"], id=0, flags=0),
    ),
    row(S.id_must_be_positive, _p["id0"], S.flags_are_unknown, fix(_p["id0"])),
    row(S.id_must_be_positive, usd(True), note="bool"),
    row(S.id_must_be_positive, usd(1.0), note="float"),  # type: ignore[arg-type]
    row(S.id_must_be_positive, usd("7"), note="str"),  # type: ignore[arg-type]
    row(S.id_must_not_exceed_max, _p["id_big"], S.flags_are_unknown, fix(_p["id_big"])),
    row(S.id_reserved_for_system, _p["id_system"], S.flags_are_unknown, fix(_p["id_system"])),
    row(S.id_reserved_for_system, usd(limits.system_id_min), note="plain_single_netted_path"),
    row(
        S.flags_are_unknown,
        _p["flags_unknown"],
        S.flags_are_mutually_exclusive,
        fix(_p["flags_unknown"], flags=PENDING | POST),
    ),
    # -1 has the LINKED bit set: alone in a batch it is an open chain, which comes first.
    row(S.flags_are_unknown, usd(flags=-2), note="negative"),
    row(S.flags_are_unknown, usd(flags=False), note="bool"),
    row(
        S.flags_are_mutually_exclusive,
        _p["flags_exclusive"],
        S.debit_account_id_must_be_positive,
        fix(_p["flags_exclusive"], flags=PENDING),
    ),
    row(
        S.expire_reserved_for_system,
        _p["expire_client"],
        S.debit_account_id_must_be_positive,
        fix(_p["expire_client"], flags=VOID),
    ),
    row(
        S.debit_account_id_must_be_positive,
        _p["debit0"],
        S.credit_account_id_must_be_positive,
        fix(_p["debit0"], debit_account_id=CLEARING),
    ),
    row(S.debit_account_id_must_be_positive, usd(debit=limits.id_max + 1), note="too_big"),
    row(
        S.credit_account_id_must_be_positive,
        _p["credit0"],
        S.pending_id_must_be_zero,
        fix(_p["credit0"], credit_account_id=MERCHANT),
    ),
    row(
        S.accounts_must_be_different,
        _p["same"],
        S.pending_id_must_be_zero,
        fix(_p["same"], credit_account_id=MERCHANT),
    ),
    row(
        S.pending_id_must_be_zero,
        _p["pending_not_zero"],
        S.timeout_reserved_for_pending_transfer,
        fix(_p["pending_not_zero"], pending_id=0),
    ),
    row(
        S.pending_id_must_be_positive,
        _p["pending_id0"],
        S.timeout_reserved_for_pending_transfer,
        fix(_p["pending_id0"], pending_id=HOLD),
    ),
    row(
        S.pending_id_must_be_different,
        _p["pending_self"],
        S.timeout_reserved_for_pending_transfer,
        fix(_p["pending_self"], id=PROBE_ID, pending_id=HOLD),
    ),
    row(
        S.timeout_reserved_for_pending_transfer,
        _p["timeout_single"],
        S.timeout_must_be_in_range,
        fix(_p["timeout_single"], flags=PENDING),
    ),
    row(
        S.timeout_must_be_in_range,
        _p["timeout_range"],
        S.amount_must_be_an_int,
        fix(_p["timeout_range"], timeout_s=5),
    ),
    row(S.timeout_must_be_in_range, usd(flags=PENDING, timeout_s=1.5), note="float"),
    row(
        S.amount_must_be_an_int,
        _p["amount_float"],
        S.currency_must_be_valid,
        fix(_p["amount_float"], amount_micros=1),
    ),
    row(S.amount_must_be_an_int, usd(amount=True), note="bool"),
    row(S.amount_must_be_an_int, usd(amount=None), note="none"),
    row(S.amount_must_be_an_int, usd(amount=float("nan")), note="nan"),
    row(
        S.amount_must_be_positive,
        _p["amount_zero"],
        S.currency_must_be_valid,
        fix(_p["amount_zero"], amount_micros=1),
    ),
    row(S.amount_must_be_positive, usd(amount=-1), note="negative"),
    row(
        S.amount_exceeds_max,
        _p["amount_big"],
        S.currency_must_be_valid,
        fix(_p["amount_big"], amount_micros=MAX),
    ),
    row(
        S.currency_must_be_valid,
        _p["currency"],
        S.code_must_be_in_range,
        fix(_p["currency"], currency="USD"),
    ),
    row(S.currency_must_be_valid, usd(currency="usd"), note="lowercase"),
    row(S.currency_must_be_valid, usd(currency=""), note="empty_on_single"),
    row(
        S.code_must_be_in_range,
        _p["code"],
        S.text_must_be_valid,
        fix(_p["code"], code=limits.code_max),
    ),
    row(
        S.text_must_be_valid,
        _p["text"],
        S.reference_too_long,
        fix(_p["text"], reference="r" * (limits.reference_chars_max + 1)),
    ),
    row(S.text_must_be_valid, usd(metadata="\ud800"), note="lone_surrogate"),
    row(
        S.reference_too_long,
        _p["reference"],
        S.metadata_too_large,
        fix(_p["reference"], reference=""),
    ),
    row(
        S.metadata_too_large,
        _p["metadata"],
        S.debit_account_not_found,
        fix(_p["metadata"], metadata="é" * (limits.metadata_bytes_max // 2)),
    ),
    row(
        S.id_already_used_with_different_request,
        _p["id_used"],
        S.debit_account_not_found,
        fix(_p["id_used"]),
        setup=id_recorded,
    ),
    row(
        S.pending_transfer_not_found,
        _p["not_found"],
        S.pending_transfer_not_pending,
        fix(_p["not_found"], pending_id=SINGLE),
        setup=hold_and_single,
    ),
    row(
        S.pending_transfer_not_pending,
        _p["not_pending"],
        S.pending_transfer_has_different_debit_account_id,
        fix(_p["not_pending"], pending_id=HOLD),
        setup=hold_and_single,
    ),
    row(
        S.pending_transfer_has_different_debit_account_id,
        _p["other_debit"],
        S.pending_transfer_has_different_credit_account_id,
        fix(_p["other_debit"], debit_account_id=0),
        setup=hold_open,
    ),
    row(
        S.pending_transfer_has_different_credit_account_id,
        _p["other_credit"],
        S.pending_transfer_has_different_currency,
        fix(_p["other_credit"], credit_account_id=0),
        setup=hold_open,
    ),
    row(
        S.pending_transfer_has_different_currency,
        _p["other_currency"],
        S.exceeds_pending_transfer_amount,
        fix(_p["other_currency"], currency=""),
        setup=hold_open,
    ),
    row(
        S.exceeds_pending_transfer_amount,
        _p["exceeds_hold"],
        S.pending_transfer_already_voided,
        fix(_p["exceeds_hold"], amount_micros=100),
        setup=hold_voided,
    ),
    row(
        S.pending_transfer_has_different_amount,
        _p["other_amount"],
        S.pending_transfer_already_posted,
        fix(_p["other_amount"], amount_micros=100),
        setup=hold_posted,
    ),
    row(
        S.pending_transfer_already_posted,
        _p["posted"],
        S.pending_transfer_expired,
        fix(_p["posted"], pending_id=HOLD_2),
        setup=posted_then_time_passes,
    ),
    row(
        S.pending_transfer_already_voided,
        _p["voided"],
        S.pending_transfer_expired,
        fix(_p["voided"], pending_id=HOLD_2),
        setup=voided_then_time_passes,
    ),
    row(S.pending_transfer_expired, _p["late"], setup=hold_times_out, note="timed_out"),
    row(S.pending_transfer_expired, _p["late"], setup=hold_expired_by_job, note="expiry_job"),
    row(S.pending_transfer_not_expired, _p["early"], setup=long_hold, system=True),
    row(
        S.debit_account_not_found,
        _p["debit_missing"],
        S.credit_account_not_found,
        fix(_p["debit_missing"], debit_account_id=CLEARING),
    ),
    row(
        S.credit_account_not_found,
        _p["credit_missing"],
        S.accounts_must_have_the_same_currency,
        fix(_p["credit_missing"], credit_account_id=EUR_1),
    ),
    row(
        S.accounts_must_have_the_same_currency,
        _p["mixed_accounts"],
        S.transfer_must_have_the_same_currency_as_accounts,
        fix(_p["mixed_accounts"], credit_account_id=MERCHANT),
    ),
    row(
        S.transfer_must_have_the_same_currency_as_accounts,
        _p["foreign"],
        S.exceeds_credits,
        fix(_p["foreign"], currency="USD"),
    ),
    row(
        S.overflows_debits_pending,
        _p["dp_full"],
        S.overflows_credits_pending,
        fix(_p["dp_full"], debit_account_id=CLEARING_2),
        setup=pending_counters_full,
    ),
    row(
        S.overflows_credits_pending,
        _p["cp_full"],
        S.overflows_credits,
        fix(_p["cp_full"], flags=0),
        setup=pending_counters_full,
    ),
    row(
        S.overflows_debits_posted,
        _p["dpo_full"],
        S.overflows_credits_posted,
        fix(_p["dpo_full"], debit_account_id=CLEARING_2),
        setup=posted_counters_full,
    ),
    row(
        S.overflows_credits_posted,
        _p["cpo_full"],
        S.overflows_credits,
        fix(_p["cpo_full"], flags=PENDING),
        setup=posted_counters_full,
    ),
    row(
        S.overflows_debits,
        _p["debits_full"],
        S.overflows_credits,
        fix(_p["debits_full"], debit_account_id=CLEARING_2),
        setup=pending_plus_posted_full,
    ),
    row(
        S.overflows_credits,
        _p["credits_full"],
        S.exceeds_credits,
        fix(_p["credits_full"], credit_account_id=CLEARING_2),
        setup=pending_plus_posted_full,
    ),
    row(
        S.overflows_timeout,
        _p["timeout_overflow"],
        S.exceeds_credits,
        fix(_p["timeout_overflow"], timeout_s=0),
        setup=clock_near_end_of_time,
    ),
    row(
        S.exceeds_credits,
        _p["overdraw"],
        S.exceeds_debits,
        fix(_p["overdraw"], debit_account_id=CLEARING),
    ),
    row(S.exceeds_credits, usd(debit=WALLET_ID, flags=PENDING), note="hold"),
    row(S.exceeds_debits, _p["bank_overpaid"]),
]


def counters(ledger: Ledger) -> dict[int, tuple[int, int, int, int]]:
    return {
        i: (
            a.debits_pending_micros,
            a.debits_posted_micros,
            a.credits_pending_micros,
            a.credits_posted_micros,
        )
        for i, a in ledger.accounts(ACCOUNT_IDS).items()
    }


def open_accounts(ledger: Ledger) -> None:
    results = ledger.create_accounts(ACCOUNTS)
    assert [r.status for r in results] == [AccountStatus.ok] * len(ACCOUNTS)


def last_status(
    ledger: Ledger, batch: tuple[Transfer, ...], *, system: bool = False
) -> TransferStatus:
    results = (ledger.submit_system if system else ledger.submit)(list(batch))
    assert len(results) == len(batch)
    return results[-1].status


# --- the table is complete and in order --------------------------------------


def test_every_transfer_status_but_ok_has_a_row() -> None:
    covered = {r.status for r in ROWS}
    missing = [s.value for s in TransferStatus if s is not S.ok and s not in covered]
    assert missing == [], f"statuses without a row: {missing}"
    assert S.ok not in covered


def test_rows_are_in_order_of_precedence() -> None:
    ranks = [precedence(r.status) for r in ROWS]
    assert ranks == sorted(ranks)


@pytest.mark.parametrize("r", [r for r in ROWS if r.later], ids=lambda r: r.id)
def test_each_repair_exposes_a_later_check(r: Row) -> None:
    assert r.later is not None
    assert precedence(r.status) < precedence(r.later), "the repaired failure must come later"
    # The repair touches the transfer whose status is checked and nothing else of the request.
    assert r.repaired[-1] != r.probe[-1]


def test_request_rows_agree_with_the_pure_validator() -> None:
    """The request phase alone, without a store: fast, and the same answers."""
    request_rows = [
        r
        for r in ROWS
        if precedence(r.status) < precedence(S.id_already_used_with_different_request)
    ]
    for r in request_rows:
        if r.status in (S.linked_event_failed, S.linked_event_chain_open):
            continue  # batch checks, not made by validate_request
        assert validate_request(r.probe[-1]) is r.status, r.id
    empty = LedgerView(accounts={}, transfers={}, rejections={}, resolutions={})
    for r in request_rows:
        plan = apply_batch(list(r.probe), empty, now_us=0)
        assert plan.results[-1].status is r.status, r.id
        assert (plan.transfers, plan.rejections, plan.deltas) == ([], [], {})


# --- every row through the real ledger ----------------------------------------


def is_request_check(status: TransferStatus) -> bool:
    return precedence(status) < precedence(S.id_already_used_with_different_request)


REQUEST_ROWS = [r for r in ROWS if is_request_check(r.status)]
STATE_ROWS = [r for r in ROWS if not is_request_check(r.status)]


def check_row(ledger: Ledger, r: Row) -> list[str]:
    """Submit the probe, its retry and its repair; return what went wrong (if anything)."""
    problems = []
    got = last_status(ledger, r.probe, system=r.system)
    if got is not r.status:
        problems.append(f"{r.id}: probe got {got.value}")
    # Retrying the same request gives the same status; only state-check
    # failures are remembered (and so replayed).
    again = (ledger.submit_system if r.system else ledger.submit)(list(r.probe))[-1]
    if (again.status, again.replayed) != (r.status, r.status.is_remembered):
        problems.append(f"{r.id}: retry got {again}")
    if r.later is not None:
        got_later = last_status(ledger, r.repaired, system=r.system)
        if got_later is not r.later:
            problems.append(f"{r.id}: repaired probe got {got_later.value}, not {r.later.value}")
    return problems


def test_request_check_rows(ledger: Ledger) -> None:
    """Request-check failures write nothing and are not remembered, so all rows share a ledger."""
    open_accounts(ledger)
    before = counters(ledger)
    problems = [problem for r in REQUEST_ROWS for problem in check_row(ledger, r)]
    assert problems == []
    # Nothing moved; no id was recorded as a transfer, and as a failure only
    # where a repaired probe reached a (remembered) state check.
    assert counters(ledger) == before
    ids = {t.id for r in REQUEST_ROWS for t in (*r.probe, *r.repaired) if type(t.id) is int}
    with ledger.store.read() as reader:
        recorded = reader.get_recorded(ids)
    remembered = {
        r.repaired[-1].id for r in REQUEST_ROWS if r.later is not None and r.later.is_remembered
    }
    assert remembered == {REPAIRED_ID}  # the metadata row's repair reaches a state check
    assert (recorded.transfers, set(recorded.rejections)) == ({}, remembered)
    report = reconcile(ledger.store)
    assert report.ok, report.violations


@pytest.mark.parametrize("r", STATE_ROWS, ids=lambda r: r.id)
def test_state_check_row(r: Row, ledger: Ledger, clock: FakeClock) -> None:
    open_accounts(ledger)
    r.setup(ledger, clock)
    before = counters(ledger)
    recorded_before = set(ledger.transfers([HOLD, HOLD_2, SINGLE, 903]))

    assert check_row(ledger, r) == []

    # Nothing moved and no failed id became a transfer.
    assert counters(ledger) == before
    if r.status is S.id_already_used_with_different_request:
        assert ledger.transfers([PROBE_ID])[PROBE_ID].debit_account_id == CLEARING
    else:
        probe_ids = [t.id for t in r.probe]
        assert ledger.transfers([*probe_ids, REPAIRED_ID]) == {}
    assert set(ledger.transfers([HOLD, HOLD_2, SINGLE, 903])) == recorded_before
    report = reconcile(ledger.store)
    assert report.ok, report.violations


def test_linked_event_failed_in_the_state_phase_is_remembered(ledger: Ledger) -> None:
    """A chain whose last leg overdraws: every leg is remembered as failed."""
    open_accounts(ledger)
    chain = [usd(600, flags=LINKED), usd(601, debit=WALLET_ID)]
    first = ledger.submit(chain)
    assert [r.status for r in first] == [S.linked_event_failed, S.exceeds_credits]
    again = ledger.submit(chain)
    assert [(r.status, r.replayed) for r in again] == [
        (S.linked_event_failed, True),
        (S.exceeds_credits, True),
    ]
    assert ledger.transfers([600, 601]) == {}
    assert reconcile(ledger.store).ok


# --- accounts -----------------------------------------------------------------

A = AccountStatus
EXISTING = 700


def account(account_id: object = 701, **fields: object) -> NewAccount:
    base: dict[str, object] = {"currency": "USD", "kind": "customer_wallet"}
    base.update(fields)
    return NewAccount(account_id, **base)  # type: ignore[arg-type]


def afix(a: NewAccount, **changes: object) -> NewAccount:
    return dataclasses.replace(a, **changes)  # type: ignore[arg-type]


_a = {
    "id0": account(0, flags=4),
    "id_big": account(limits.id_max + 1, flags=4),
    "flags_unknown": account(flags=7),
    "flags_exclusive": account(flags=3, currency="XYZ"),
    "currency": account(currency="XYZ", kind="Bad Kind"),
    "kind": account(kind="Wallet", owner_ref="\x00"),
    "text": account(owner_ref="\x00" * (limits.owner_ref_chars_max + 1)),
    "owner": account(owner_ref="o" * (limits.owner_ref_chars_max + 1), credit_limit_micros=-1),
    "limit": account(credit_limit_micros=MAX + 1),
    "limit_flag": account(EXISTING, currency="EUR", credit_limit_micros=5),
    "exists": account(EXISTING, currency="EUR"),
}

ACCOUNT_ROWS: list[tuple[AccountStatus, NewAccount, AccountStatus | None, NewAccount | None]] = [
    (A.id_must_be_positive, _a["id0"], A.flags_are_unknown, afix(_a["id0"], id=701)),
    (A.id_must_not_exceed_max, _a["id_big"], A.flags_are_unknown, afix(_a["id_big"], id=701)),
    (
        A.flags_are_unknown,
        _a["flags_unknown"],
        A.flags_are_mutually_exclusive,
        afix(_a["flags_unknown"], flags=3),
    ),
    (
        A.flags_are_mutually_exclusive,
        _a["flags_exclusive"],
        A.currency_must_be_valid,
        afix(_a["flags_exclusive"], flags=1),
    ),
    (
        A.currency_must_be_valid,
        _a["currency"],
        A.kind_must_be_valid,
        afix(_a["currency"], currency="USD"),
    ),
    (A.kind_must_be_valid, _a["kind"], A.text_must_be_valid, afix(_a["kind"], kind="wallet")),
    (
        A.text_must_be_valid,
        _a["text"],
        A.owner_ref_too_long,
        afix(_a["text"], owner_ref="o" * (limits.owner_ref_chars_max + 1)),
    ),
    (
        A.owner_ref_too_long,
        _a["owner"],
        A.credit_limit_must_be_in_range,
        afix(_a["owner"], owner_ref=""),
    ),
    (
        A.credit_limit_must_be_in_range,
        _a["limit"],
        A.credit_limit_requires_a_balance_flag,
        afix(_a["limit"], credit_limit_micros=5),
    ),
    (
        A.credit_limit_requires_a_balance_flag,
        _a["limit_flag"],
        A.exists_with_different_fields,
        afix(_a["limit_flag"], credit_limit_micros=0),
    ),
    (A.exists_with_different_fields, _a["exists"], None, None),
]


def test_every_account_status_but_ok_has_a_row() -> None:
    covered = {status for status, *_ in ACCOUNT_ROWS}
    assert [s for s in AccountStatus if s is not A.ok and s not in covered] == []
    ranks = [list(AccountStatus).index(status) for status, *_ in ACCOUNT_ROWS]
    assert ranks == sorted(ranks)


def test_account_status_rows(ledger: Ledger) -> None:
    """No row opens an account, so all rows share a ledger (with one account opened first)."""
    existing = account(EXISTING)
    assert ledger.create_accounts([existing])[0].status is A.ok
    order = list(AccountStatus)
    problems = []
    for status, probe, later, repaired in ACCOUNT_ROWS:
        got = ledger.create_accounts([probe])[0].status
        if got is not status:
            problems.append(f"{status.value}: probe got {got.value}")
        if later is not None:
            assert repaired is not None
            assert order.index(status) < order.index(later)
            got_later = ledger.create_accounts([repaired])[0].status
            if got_later is not later:
                problems.append(f"{status.value}: repaired got {got_later.value}")
    assert problems == []
    # Nothing was opened, and the existing account is untouched.
    assert reconcile(ledger.store).accounts == 1
    assert ledger.accounts([EXISTING])[EXISTING].same_request(existing)
    assert reconcile(ledger.store).ok
