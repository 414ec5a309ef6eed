"""Processor events, disputes and manual adjustments, as accounting stories on both stores.

Every story ends with the oracles: the ledger reconciles, and the processor's
own books equal the charges credited in the ledger. Events are signed by the
SimulatedProcessor (``sign_event``) and delivered through
``ProcessorEvents.handle``; the vectors (tampered, stale, future-dated,
duplicated, reordered) must give the right accept/reject and exactly one
effect per event.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import pytest

from micropay.core.accounts import available_micros, credit_balance_micros, debit_balance_micros
from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments.chart import Kind, Owner
from micropay.payments.models import FundingSource, PurchaseStatus, TopUpStatus
from micropay.payments.processor import ProcessorEvent
from micropay.processors.simulated import Faults, SimulatedProcessor
from micropay.service.adjustments import (
    Adjustments,
    AdjustmentStatus,
    actor_chars_max,
    reason_chars_max,
)
from micropay.service.ports import StoreError
from micropay.service.processor_events import EventEffect, EventStatus, ProcessorEvents
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.store import open_store

DIRECT_ONLY = (FundingSource.direct,)
WALLET_ONLY = (FundingSource.wallet,)
DISPUTE_FEE = 15_000_000


def usd(text: str) -> int:
    return parse_amount(text, "USD")


class Simulated(SimulatedProcessor):
    """The simulated processor, plus the dispute ``status`` its ``verify_event`` drops.

    (Reported: ``SimulatedProcessor.verify_event`` does not copy ``status`` into
    the event; the Stripe adapter does.) The signature is still checked by the parent.
    """

    def verify_event(self, payload: bytes, signature_header: str, now_s: int) -> ProcessorEvent:
        event = super().verify_event(payload, signature_header, now_s)
        return dataclasses.replace(event, status=str(json.loads(payload).get("status", "")))


@pytest.fixture
def processor() -> Simulated:
    return Simulated()


@pytest.fixture
def payments(store, processor, clock):  # type: ignore[no-untyped-def]
    from micropay.service.payments import Payments

    return Payments(store, processor, clock=clock)


@pytest.fixture
def events(payments) -> ProcessorEvents:  # type: ignore[no-untyped-def]
    return ProcessorEvents(payments)


def now_s(clock: Any) -> int:
    return int(clock.now_us // 1_000_000)


def signed(processor: SimulatedProcessor, timestamp_s: int, **body: Any) -> tuple[bytes, str]:
    payload = json.dumps({"currency": "USD", **body}).encode()
    return payload, processor.sign_event(payload, timestamp_s)


def balance(payments: Any, account_id: int) -> int:
    """Credit balance (negative for debit-normal accounts)."""
    return credit_balance_micros(payments.ledger.accounts([account_id])[account_id])


def losses(payments: Any) -> int:
    accounts = payments.ledger.accounts([chart.platform_account(Kind.dispute_losses, "USD")])
    return debit_balance_micros(next(iter(accounts.values())))


def books_balance(payments: Any, processor: SimulatedProcessor) -> None:
    report = reconcile(payments.store)
    assert report.ok, report.violations
    assert reconcile_processor(payments.store, processor.succeeded_charges()) == []


def all_balances(payments: Any) -> dict[int, tuple[int, int, int, int]]:
    with payments.store.read() as reader:
        return {
            a.id: (
                a.debits_pending_micros,
                a.debits_posted_micros,
                a.credits_pending_micros,
                a.credits_posted_micros,
            )
            for a in reader.iter_accounts()
        }


def processor_charge_of(payments: Any, charge_id: int) -> str:
    charge = payments.charges.tx(lambda tx: tx.get_charge(charge_id))
    return str(charge.processor_charge_id)


def direct_sale(payments: Any) -> tuple[Any, Any, Any, str]:
    """Erin buys a 20.00 USD textbook by a direct card charge (fee 0.88)."""
    shop = payments.create_merchant("E-books", "USD", funding_policy=DIRECT_ONLY)
    erin = payments.create_customer(
        "USD", processor_customer_token="cus_e", payment_method_token="pm_e"
    )
    payments.set_item(shop.id, "book", "Textbook", usd("20.00"))
    receipt = payments.purchase(shop.id, erin.id, "book", "k-book")
    assert (receipt.status, receipt.funding) == (PurchaseStatus.ok, FundingSource.direct)
    purchase = payments.charges.tx(lambda tx: tx.get_purchase(receipt.purchase_id))
    return shop, erin, receipt, processor_charge_of(payments, purchase.charge_id)


def dispute_event(
    processor: SimulatedProcessor,
    at_s: int,
    event_id: str,
    kind: str,
    charge: str,
    amount_minor: int = 2000,
    status: str = "",
) -> tuple[bytes, str]:
    return signed(
        processor,
        at_s,
        id=event_id,
        kind=kind,
        object_id="dp_1",
        charge_id=charge,
        amount_minor=amount_minor,
        status=status,
    )


# --- disputes ----------------------------------------------------------------------


def test_dispute_on_a_direct_purchase_is_lost(payments, processor, events, clock) -> None:  # type: ignore[no-untyped-def]
    """Erin disputes her 20.00 textbook: the merchant gives it back, we pay the 15.00 fee."""
    shop, erin, _, charge = direct_sale(payments)
    payable = chart.payable_account(shop.id, "USD")
    assert balance(payments, payable) == usd("20.00")
    assert payments.has_access(shop.id, erin.id, "book")

    opened = events.handle(
        *dispute_event(processor, now_s(clock), "evt_1", "dispute_created", charge), now_s(clock)
    )

    assert (opened.status, opened.effect) == (EventStatus.applied, EventEffect.dispute_opened)
    assert balance(payments, payable) == 0
    assert losses(payments) == DISPUTE_FEE  # the platform bears the processor's fee
    clearing = chart.platform_account(Kind.processor_clearing, "USD")
    # Clearing held 20.00 - 0.88 fee; the processor took back 20.00 and 15.00.
    assert -balance(payments, clearing) == usd("19.12") - usd("20.00") - usd("15.00")
    assert not payments.has_access(shop.id, erin.id, "book")
    dispute = events.dispute("dp_1")
    assert (dispute.status, dispute.merchant_micros, dispute.fee_micros) == (
        "open",
        usd("20.00"),
        DISPUTE_FEE,
    )

    clock.advance(3_600)
    lost = events.handle(
        *dispute_event(processor, now_s(clock), "evt_2", "dispute_closed", charge, status="lost"),
        now_s(clock),
    )
    assert (lost.status, lost.effect) == (EventStatus.applied, EventEffect.dispute_lost)
    assert balance(payments, payable) == 0  # nothing more moved
    assert losses(payments) == DISPUTE_FEE
    assert events.dispute("dp_1").status == "lost"
    books_balance(payments, processor)


def test_dispute_won_is_reversed_exactly_once(payments, processor, events, clock) -> None:  # type: ignore[no-untyped-def]
    shop, erin, _, charge = direct_sale(payments)
    payable = chart.payable_account(shop.id, "USD")
    t = now_s(clock)
    events.handle(*dispute_event(processor, t, "evt_1", "dispute_created", charge), t)
    won_delivery = dispute_event(processor, t, "evt_2", "dispute_closed", charge, status="won")

    won = events.handle(*won_delivery, t)
    again = events.handle(*won_delivery, t)  # the processor delivers the same event twice
    other = events.handle(  # a second, different "won" event for the same dispute
        *dispute_event(processor, t, "evt_3", "dispute_closed", charge, status="won"), t
    )

    assert (won.status, won.effect, won.replayed) == (
        EventStatus.applied,
        EventEffect.dispute_won,
        False,
    )
    assert (again.status, again.effect, again.replayed) == (
        EventStatus.applied,
        EventEffect.dispute_won,
        True,
    )
    assert (other.status, other.effect) == (EventStatus.ignored, EventEffect.dispute_already_closed)
    assert balance(payments, payable) == usd("20.00")  # back, once
    assert losses(payments) == 0
    assert payments.has_access(shop.id, erin.id, "book")  # access restored
    books_balance(payments, processor)


def test_topup_dispute_takes_what_the_wallet_has_and_books_the_rest(  # type: ignore[no-untyped-def]
    payments, processor, events, clock
) -> None:
    """Hank tops up 10.00, spends 7.00, then disputes the top-up."""
    shop = payments.create_merchant("Daily", "USD", funding_policy=WALLET_ONLY)
    hank = payments.create_customer(
        "USD", processor_customer_token="cus_h", payment_method_token="pm_h"
    )
    payments.set_item(shop.id, "bundle", "Bundle", usd("7.00"))
    topup = payments.top_up(hank.id, usd("10.00"), "t1")
    assert payments.purchase(shop.id, hank.id, "bundle", "b1").ok
    wallet = chart.wallet_account(hank.id, "USD")
    assert balance(payments, wallet) == usd("3.00")
    charge = processor_charge_of(payments, topup.charge_id)
    t = now_s(clock)

    opened = events.handle(
        *dispute_event(processor, t, "evt_1", "dispute_created", charge, amount_minor=1000), t
    )

    assert opened.effect is EventEffect.dispute_opened
    assert balance(payments, wallet) == 0  # never below zero
    assert losses(payments) == usd("7.00") + DISPUTE_FEE
    dispute = events.dispute("dp_1")
    assert (dispute.customer_micros, dispute.loss_micros) == (usd("3.00"), usd("7.00"))
    books_balance(payments, processor)

    won = events.handle(
        *dispute_event(processor, t, "evt_2", "dispute_closed", charge, 1000, status="won"), t
    )
    assert won.effect is EventEffect.dispute_won
    assert balance(payments, wallet) == usd("3.00")
    assert losses(payments) == 0
    books_balance(payments, processor)


def test_closed_before_created_lost_moves_once(payments, processor, events, clock) -> None:  # type: ignore[no-untyped-def]
    shop, erin, _, charge = direct_sale(payments)
    payable = chart.payable_account(shop.id, "USD")
    t = now_s(clock)
    closed = events.handle(
        *dispute_event(processor, t, "evt_2", "dispute_closed", charge, status="lost"), t
    )
    created = events.handle(*dispute_event(processor, t, "evt_1", "dispute_created", charge), t)
    assert closed.effect is EventEffect.dispute_lost
    assert (created.status, created.effect) == (
        EventStatus.ignored,
        EventEffect.dispute_already_known,
    )
    assert balance(payments, payable) == 0
    assert losses(payments) == DISPUTE_FEE
    assert not payments.has_access(shop.id, erin.id, "book")
    books_balance(payments, processor)


def test_closed_won_before_created_moves_nothing(payments, processor, events, clock) -> None:  # type: ignore[no-untyped-def]
    shop, erin, _, charge = direct_sale(payments)
    before = all_balances(payments)
    t = now_s(clock)
    won = events.handle(
        *dispute_event(processor, t, "evt_2", "dispute_closed", charge, status="won"), t
    )
    created = events.handle(*dispute_event(processor, t, "evt_1", "dispute_created", charge), t)
    assert won.effect is EventEffect.dispute_won
    assert created.effect is EventEffect.dispute_already_known
    assert all_balances(payments) == before
    assert payments.has_access(shop.id, erin.id, "book")
    books_balance(payments, processor)


def test_dispute_for_a_charge_still_pending_is_deferred_then_applied(store, clock) -> None:  # type: ignore[no-untyped-def]
    from micropay.service.payments import Payments

    processor = Simulated(Faults(timeout_after_charge=1.0))
    payments = Payments(store, processor, clock=clock)
    events = ProcessorEvents(payments)
    ann = payments.create_customer(
        "USD", processor_customer_token="cus_a", payment_method_token="pm_a"
    )
    receipt = payments.top_up(ann.id, usd("10.00"), "t1")
    assert receipt.status is TopUpStatus.charge_pending
    [charge] = processor.succeeded_charges()  # the processor charged; we never heard
    delivery = dispute_event(processor, now_s(clock), "evt_1", "dispute_created", charge, 1000)

    early = events.handle(*delivery, now_s(clock))
    assert (early.status, early.effect) == (EventStatus.deferred, EventEffect.charge_unknown)
    assert events.event("evt_1") is None  # not recorded: the redelivery will count

    processor.faults.timeout_after_charge = 0.0
    clock.advance(120)
    assert [o.status.value for o in payments.charges.run_due()] == ["succeeded"]
    late = events.handle(
        *dispute_event(processor, now_s(clock), "evt_1", "dispute_created", charge, 1000),
        now_s(clock),
    )
    assert (late.status, late.effect) == (EventStatus.applied, EventEffect.dispute_opened)
    assert balance(payments, chart.wallet_account(ann.id, "USD")) == 0
    books_balance(payments, processor)


# --- charge events -------------------------------------------------------------------


def test_charge_succeeded_event_completes_a_pending_top_up_once(store, clock) -> None:  # type: ignore[no-untyped-def]
    from micropay.service.payments import Payments

    processor = Simulated(Faults(timeout_after_charge=1.0))
    payments = Payments(store, processor, clock=clock)
    events = ProcessorEvents(payments)
    bea = payments.create_customer(
        "USD", processor_customer_token="cus_b", payment_method_token="pm_b"
    )
    receipt = payments.top_up(bea.id, usd("10.00"), "t1")
    assert receipt.status is TopUpStatus.charge_pending
    [charge] = processor.succeeded_charges()
    processor.faults.timeout_after_charge = 0.0
    t = now_s(clock)
    delivery = signed(
        processor,
        t,
        id="evt_ok",
        kind="charge_succeeded",
        object_id=charge,
        charge_id=charge,
        amount_minor=1000,
        metadata={"charge": str(receipt.charge_id)},
    )

    first = events.handle(*delivery, t)
    duplicate = events.handle(*delivery, t)

    assert (first.status, first.effect) == (EventStatus.applied, EventEffect.charge_completed)
    assert (duplicate.effect, duplicate.replayed) == (EventEffect.charge_completed, True)
    wallet = chart.wallet_account(bea.id, "USD")
    assert balance(payments, wallet) == usd("10.00")  # credited once
    clock.advance(120)
    assert payments.charges.run_due() == []  # nothing left to recover
    again = events.handle(
        *signed(
            processor, t, id="evt_ok_2", kind="charge_succeeded", object_id=charge, charge_id=charge
        ),
        t,
    )
    assert (again.status, again.effect) == (
        EventStatus.ignored,
        EventEffect.charge_already_recorded,
    )
    assert balance(payments, wallet) == usd("10.00")
    assert len(processor.succeeded_charges()) == 1
    books_balance(payments, processor)


def test_unhandled_and_unknown_events_are_recorded_without_effect(
    payments, processor, events, clock
) -> None:  # type: ignore[no-untyped-def]
    t = now_s(clock)
    payout = events.handle(
        *signed(processor, t, id="evt_p", kind="payout_paid", object_id="po_1"), t
    )
    unknown = events.handle(
        *signed(
            processor, t, id="evt_c", kind="charge_succeeded", object_id="ch_x", charge_id="ch_x"
        ),
        t,
    )
    odd = events.handle(
        *signed(
            processor,
            t,
            id="evt_d",
            kind="dispute_closed",
            object_id="dp_9",
            charge_id="ch_x",
            status="charge_refunded",
        ),
        t,
    )
    assert (payout.status, payout.effect) == (EventStatus.ignored, EventEffect.not_handled)
    assert (unknown.status, unknown.effect) == (EventStatus.ignored, EventEffect.charge_unknown)
    assert (odd.status, odd.effect) == (EventStatus.ignored, EventEffect.dispute_status_unknown)
    assert events.event("evt_p").effect == "not_handled"
    books_balance(payments, processor)


# --- verification vectors ---------------------------------------------------------------


def _vectors(processor: SimulatedProcessor, t: int, charge: str) -> dict[str, tuple[bytes, str]]:
    payload, header = dispute_event(processor, t, "evt_bad", "dispute_created", charge)
    return {
        "tampered": (payload.replace(b"2000", b"2100"), header),
        "wrong secret": (
            payload,
            SimulatedProcessor(webhook_secret="whsec_other").sign_event(payload, t),
        ),
        "stale": (payload, processor.sign_event(payload, t - 301)),
        "future-dated": (payload, processor.sign_event(payload, t + 301)),
        "no header": (payload, ""),
        "not an event": signed(processor, t, id="evt_bad", kind="no_such_kind", object_id="x"),
        "too large": (b" " * ((1 << 20) + 1), header),
    }


@pytest.mark.parametrize(
    "vector",
    ["tampered", "wrong secret", "stale", "future-dated", "no header", "not an event", "too large"],
)
def test_rejected_events_write_nothing(payments, processor, events, clock, vector) -> None:  # type: ignore[no-untyped-def]
    shop, erin, _, charge = direct_sale(payments)
    t = now_s(clock)
    before = all_balances(payments)
    outcome = events.handle(*_vectors(processor, t, charge)[vector], t)
    assert (outcome.status, outcome.effect) == (EventStatus.rejected, EventEffect.none)
    assert outcome.detail
    assert events.event("evt_bad") is None
    assert events.dispute("dp_1") is None
    assert all_balances(payments) == before
    assert payments.has_access(shop.id, erin.id, "book")


@pytest.mark.parametrize("skew_s", [-300, 300])
def test_events_at_the_edge_of_the_tolerance_are_accepted(
    payments, processor, events, clock, skew_s
) -> None:  # type: ignore[no-untyped-def]
    _, _, _, charge = direct_sale(payments)
    t = now_s(clock)
    payload, _ = dispute_event(processor, t, "evt_1", "dispute_created", charge)
    outcome = events.handle(payload, processor.sign_event(payload, t + skew_s), t)
    assert outcome.effect is EventEffect.dispute_opened


def test_one_event_delivered_concurrently_has_one_effect(
    payments, processor, clock, database_url
) -> None:  # type: ignore[no-untyped-def]
    from micropay.service.payments import Payments

    shop, _, _, charge = direct_sale(payments)
    t = now_s(clock)
    created = dispute_event(processor, t, "evt_1", "dispute_created", charge)
    also_created = dispute_event(processor, t, "evt_1b", "dispute_created", charge)  # resent as new
    deliveries = [created] * 3 + [also_created] * 3
    barrier = threading.Barrier(len(deliveries))
    outcomes: list[Any] = []

    def deliver(delivery: tuple[bytes, str]) -> None:
        own = Payments(open_store(database_url), processor, clock=clock)
        try:
            barrier.wait(timeout=30)
            outcomes.append(ProcessorEvents(own).handle(*delivery, t))
        finally:
            own.store.close()

    threads = [threading.Thread(target=deliver, args=(d,)) for d in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    effects = sorted(o.effect.value for o in outcomes if not o.replayed)
    assert effects == ["dispute_already_known", "dispute_opened"]
    assert sum(o.replayed for o in outcomes) == 4
    assert balance(payments, chart.payable_account(shop.id, "USD")) == 0  # taken back once
    assert losses(payments) == DISPUTE_FEE
    books_balance(payments, processor)


# --- adjustments ----------------------------------------------------------------------------


def test_goodwill_credit_and_correction_record_who_and_why(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    adjustments = Adjustments(payments)
    ivy = payments.create_customer(
        "USD", processor_customer_token="cus_i", payment_method_token="pm_i"
    )
    wallet = chart.wallet_account(ivy.id, "USD")

    credit = adjustments.adjust(
        Owner.customer,
        ivy.id,
        Kind.customer_wallet,
        "USD",
        usd("2.50"),
        reason="article failed to load, ticket 123",
        actor="staff:sam",
        idempotency_key="adj-1",
    )
    clock.advance(60)
    correction = adjustments.adjust(
        Owner.customer,
        ivy.id,
        Kind.customer_wallet,
        "USD",
        -usd("0.50"),
        reason="double goodwill",
        actor="staff:kim",
        idempotency_key="adj-2",
    )
    replay = adjustments.adjust(
        Owner.customer,
        ivy.id,
        Kind.customer_wallet,
        "USD",
        usd("2.50"),
        reason="article failed to load, ticket 123",
        actor="staff:sam",
        idempotency_key="adj-1",
    )
    reused = adjustments.adjust(
        Owner.customer,
        ivy.id,
        Kind.customer_wallet,
        "USD",
        usd("9.00"),
        reason="something else",
        actor="staff:sam",
        idempotency_key="adj-1",
    )

    assert credit.ok
    assert correction.ok
    assert (replay.status, replay.replayed, replay.adjustment_id) == (
        AdjustmentStatus.ok,
        True,
        credit.adjustment_id,
    )
    assert reused.status is AdjustmentStatus.idempotency_key_reused
    assert balance(payments, wallet) == usd("2.00")
    pool = chart.platform_account(Kind.adjustments, "USD")
    assert balance(payments, pool) == -usd("2.00")
    history = adjustments.history(wallet)
    assert [(h.amount_micros, h.actor, h.reason) for h in history] == [
        (usd("2.50"), "staff:sam", "article failed to load, ticket 123"),
        (-usd("0.50"), "staff:kim", "double goodwill"),
    ]
    assert history[1].created_at_us - history[0].created_at_us == 60_000_000
    books_balance(payments, processor)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"amount_micros": 0}, AdjustmentStatus.amount_invalid),
        ({"amount_micros": 1.5}, AdjustmentStatus.amount_invalid),
        ({"amount_micros": 2**63}, AdjustmentStatus.amount_invalid),
        ({"reason": ""}, AdjustmentStatus.reason_invalid),
        ({"reason": "  "}, AdjustmentStatus.reason_invalid),
        ({"reason": "x" * (reason_chars_max + 1)}, AdjustmentStatus.reason_invalid),
        ({"reason": "bad\nline"}, AdjustmentStatus.reason_invalid),
        ({"actor": ""}, AdjustmentStatus.actor_invalid),
        ({"actor": "a" * (actor_chars_max + 1)}, AdjustmentStatus.actor_invalid),
        ({"idempotency_key": ""}, AdjustmentStatus.idempotency_key_invalid),
        ({"owner_id": 999_999}, AdjustmentStatus.account_not_found),
        ({"currency": "EUR"}, AdjustmentStatus.account_not_found),
        ({"currency": "XXX"}, AdjustmentStatus.account_not_found),
        (
            {"kind": Kind.adjustments, "owner": Owner.platform, "owner_id": 0},
            AdjustmentStatus.account_invalid,
        ),
        ({"amount_micros": -usd("1.01")}, AdjustmentStatus.would_overdraw),
    ],
)
def test_bad_adjustments_are_refused_and_write_nothing(
    payments, processor, change, expected
) -> None:  # type: ignore[no-untyped-def]
    adjustments = Adjustments(payments)
    jo = payments.create_customer(
        "USD", processor_customer_token="cus_j", payment_method_token="pm_j"
    )
    assert payments.top_up(jo.id, usd("5.00"), "t1").status is TopUpStatus.ok
    spend = adjustments.adjust(
        Owner.customer,
        jo.id,
        Kind.customer_wallet,
        "USD",
        -usd("4.00"),
        reason="chargeback recovered by hand",
        actor="staff:sam",
        idempotency_key="adj-0",
    )
    assert spend.ok  # 1.00 left: at the limit, -1.00 passes and -1.01 overdraws
    args: dict[str, Any] = {
        "owner": Owner.customer,
        "owner_id": jo.id,
        "kind": Kind.customer_wallet,
        "currency": "USD",
        "amount_micros": usd("1.00"),
        "reason": "why",
        "actor": "staff:sam",
        "idempotency_key": "k",
    }
    before = all_balances(payments)
    receipt = Adjustments(payments).adjust(**{**args, **change})
    assert receipt.status is expected
    assert all_balances(payments) == before
    assert Adjustments(payments).history(chart.wallet_account(jo.id, "USD"))[1:] == []
    at_limit = adjustments.adjust(
        **{**args, "amount_micros": -usd("1.00"), "idempotency_key": "k2"}
    )
    assert at_limit.ok
    books_balance(payments, processor)


def test_audit_rows_cannot_be_changed_or_deleted(payments, processor, clock, events) -> None:  # type: ignore[no-untyped-def]
    kim = payments.create_customer(
        "USD", processor_customer_token="cus_k", payment_method_token="pm_k"
    )
    assert (
        Adjustments(payments)
        .adjust(
            Owner.customer,
            kim.id,
            Kind.customer_wallet,
            "USD",
            usd("1.00"),
            reason="welcome credit",
            actor="staff:sam",
            idempotency_key="adj-1",
        )
        .ok
    )
    t = now_s(clock)
    events.handle(*signed(processor, t, id="evt_p", kind="payout_paid", object_id="po_1"), t)
    for statement in (
        "UPDATE adjustments SET actor = 'someone else'",
        "DELETE FROM adjustments",
        "UPDATE processor_events SET effect = 'none'",
        "DELETE FROM processor_events",
    ):
        with pytest.raises(StoreError, match="append-only"), payments.store.write() as tx:
            tx._cur.execute(statement)
    [row] = Adjustments(payments).history(chart.wallet_account(kim.id, "USD"))
    assert row.actor == "staff:sam"
    assert events.event("evt_p") is not None


def test_concurrent_debits_never_overdraw_the_wallet(
    payments, processor, clock, database_url
) -> None:  # type: ignore[no-untyped-def]
    """Eight staff debit 0.30 each from a 1.00 wallet at once: exactly three succeed."""
    from micropay.service.payments import Payments

    lee = payments.create_customer(
        "USD", processor_customer_token="cus_l", payment_method_token="pm_l"
    )
    assert (
        Adjustments(payments)
        .adjust(
            Owner.customer,
            lee.id,
            Kind.customer_wallet,
            "USD",
            usd("1.00"),
            reason="opening credit",
            actor="staff:sam",
            idempotency_key="adj-open",
        )
        .ok
    )
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def debit(n: int) -> None:
        own = Payments(open_store(database_url), processor, clock=clock)
        try:
            barrier.wait(timeout=30)
            results.append(
                Adjustments(own).adjust(
                    Owner.customer,
                    lee.id,
                    Kind.customer_wallet,
                    "USD",
                    -usd("0.30"),
                    reason="correction",
                    actor=f"staff:{n}",
                    idempotency_key=f"adj-{n}",
                )
            )
        finally:
            own.store.close()

    threads = [threading.Thread(target=debit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(r.status.value for r in results) == ["ok"] * 3 + ["would_overdraw"] * 5
    wallet = chart.wallet_account(lee.id, "USD")
    assert available_micros(payments.ledger.accounts([wallet])[wallet]) == usd("0.10")
    assert len(Adjustments(payments).history(wallet)) == 4
    books_balance(payments, processor)
