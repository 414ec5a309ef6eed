"""Stateful model test of the payment models (issue 3) on a real store.

A Hypothesis rule-based machine drives the real :class:`Payments` service (with
gift cards, tips and metered usage on top) through a :class:`SimulatedProcessor`
whose faults are switched per rule (declines through the declining payment
method, timeouts *after* the charge, 500s, 429s) and a fake clock. A plain-Python
oracle beside it books every receipt the service returns and every charge
the processor completes, and after EVERY step checks:

- ``reconcile(store).ok``; ``reconcile_processor`` is ``[]`` whenever no charge
  is pending, and otherwise only reports processor charges "never credited",
  at most one per pending charge (a timeout after the charge); the
  ``recover`` rule turns the faults off, runs the due charges and then demands
  ``[]`` exactly;
- every ledger account's net balance equals the oracle's (wallets = top-ups
  credited - wallet purchases + wallet refunds + redemptions - tips - usage;
  tabs; store credit; merchant payables = sales - refunds + tips + usage + till
  spends - store credit issued + store credit breakage; gift cards; clearing;
  fees; gift card funding; breakage), no other account holds money, and each
  currency sums to zero;
- per (merchant, customer, item) at most one paid purchase with an active
  entitlement, and a replayed key returns the same purchase;
- refunded total per purchase <= price; a tab never owes more than its limit
  (the limit follows the trust ladder the oracle replays); no wallet below zero;
- a refused operation changes no balance (all account counters compared),
  unless a processor charge completed during it (an auto-reload or a tab
  settlement the refusal followed).

``MICROPAY_PAYMENTS_EXAMPLES`` sets the SQLite examples (default 60; PostgreSQL
runs a quarter, at least 3), ``MICROPAY_PAYMENTS_STEPS`` the steps per example
(default 40), ``MICROPAY_HYPOTHESIS_RANDOM=1`` fresh random examples.

The regression tests at the end are bugs the machine found in the services;
they fail until the services are fixed (see each docstring). The machine keeps
sub-cent prices away from merchants that take cards (first regression) so it
can explore the rest; the double charge of the second regression is found by
random runs (``MICROPAY_HYPOTHESIS_RANDOM=1 MICROPAY_PAYMENTS_EXAMPLES=150``).
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import FakeClock, PgSchemas, require_pg
from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments import gift_cards as gc
from micropay.payments.chart import Kind
from micropay.payments.gift_cards import IssueStatus, RedeemStatus
from micropay.payments.models import FundingSource, PurchaseStatus, TabPolicy, TopUpStatus
from micropay.payments.records import ChargeRecord
from micropay.processors.simulated import DECLINING_PAYMENT_METHOD, SimulatedProcessor
from micropay.service.billing import Metering, Tips
from micropay.service.gift_cards import GiftCards
from micropay.service.payments import Payments, PaymentsInputError
from micropay.service.ports import PaymentsStore
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.service.refunds import RefundStatus
from micropay.store import open_store

EXAMPLES = int(os.environ.get("MICROPAY_PAYMENTS_EXAMPLES", "60"))
PG_EXAMPLES = max(3, EXAMPLES // 4)
STEPS = int(os.environ.get("MICROPAY_PAYMENTS_STEPS", "40"))
FIGURES: dict[str, int] = defaultdict(int)
TIMEOUT_RETRY_S = 61  # > charges.retry_backoff_s


def usd(text: str) -> int:
    return parse_amount(text, "USD")


W, T, D = FundingSource.wallet, FundingSource.tab, FundingSource.direct
POLICIES = [(W,), (W, T), (W, T, D), (T, W), (D,), (W, D)]
PRICES = [usd(p) for p in ("0.0004", "0.01", "0.10", "0.3333", "0.60", "1.00", "1.2345", "20")]
FAULTS = ["none", "none", "none", "timeout", "server_error", "rate_limited"]
PREPAID = (FundingSource.store_credit, W, T)


@dataclass
class Purchase:
    id: int
    merchant: int
    customer: int
    item_ref: str
    price: int
    funding: FundingSource
    status: str  # ok | charge_pending | charge_declined
    refunded: int = 0
    ends_at_us: int | None = None  # entitlement end once granted; 0 = forever


@dataclass
class Card:
    id: int
    code: str
    merchant: int  # 0: platform card
    expires_at_us: int
    remaining: int
    expired: bool = False


class Oracle:
    """Expected net (credits - debits) of every account that may hold money."""

    def __init__(self) -> None:
        self.net: dict[int, int] = defaultdict(int)
        self.currency: dict[int, str] = {}

    def move(self, debit: int, credit: int, amount: int, currency: str = "USD") -> None:
        self.net[debit] -= amount
        self.net[credit] += amount
        self.currency[debit] = self.currency[credit] = currency


def platform(kind: Kind) -> int:
    return chart.platform_account(kind, "USD")


class PaymentsMachine(RuleBasedStateMachine):
    open_fresh_store: Callable[[], PaymentsStore]

    merchants = Bundle("merchants")
    customers = Bundle("customers")
    items = Bundle("items")
    purchases = Bundle("purchases")

    def __init__(self) -> None:
        super().__init__()
        self.store = type(self).open_fresh_store()
        self.clock = FakeClock()
        self.processor = SimulatedProcessor()
        self.policy = TabPolicy()
        self.payments = Payments(self.store, self.processor, clock=self.clock)
        self.cards = GiftCards(self.payments, pepper=b"stateful pepper")
        self.tips = Tips(self.payments)
        self.metering = Metering(self.payments)
        self.o = Oracle()
        self.merchant_policy: dict[int, tuple[FundingSource, ...]] = {}
        self.merchant_currency: dict[int, str] = {}
        self.unit_price: dict[int, int] = {}
        self.customer_currency: dict[int, str] = {}
        self.customer_pm: dict[int, str] = {}
        self.auto_reload: dict[int, int] = {}
        self.tab_limit: dict[int, int] = {}
        self.item_price: dict[tuple[int, str], tuple[int, int]] = {}
        self.bought: dict[int, Purchase] = {}
        self.purchase_keys: dict[tuple[int, str], tuple[tuple[object, ...], int]] = {}
        self.topup_keys: dict[tuple[int, str], int] = {}
        self.refund_keys: dict[tuple[int, str], tuple[int, str]] = {}
        self.charges_seen: dict[int, str] = {}
        self.gift_cards: list[Card] = []
        self.usage_unbilled: dict[tuple[int, int], int] = defaultdict(int)  # quantity
        self.counter = 0
        FIGURES["examples"] += 1

    def teardown(self) -> None:
        self.store.close()

    # --- helpers -------------------------------------------------------------

    def _key(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def _counters(self) -> dict[int, tuple[int, int, int, int]]:
        with self.store.read() as reader:
            return {
                a.id: (
                    a.debits_pending_micros,
                    a.debits_posted_micros,
                    a.credits_pending_micros,
                    a.credits_posted_micros,
                )
                for a in reader.iter_accounts()
            }

    def _charges(self) -> list[ChargeRecord]:
        return self.payments.charges.tx(lambda tx: tx.charges_for_reconcile())

    def _fault(self, fault: str) -> None:
        f = self.processor.faults
        f.timeout_after_charge = 1.0 if fault == "timeout" else 0.0
        f.server_error = 1.0 if fault == "server_error" else 0.0
        f.rate_limited = 1.0 if fault == "rate_limited" else 0.0
        FIGURES[f"fault_{fault}"] += 1

    def _charges_changed(self) -> bool:
        """Fold newly finished charges into the oracle; True if any finished."""
        changed = False
        for c in self._charges():
            seen = self.charges_seen.get(c.id)
            if seen == c.status:
                continue
            assert seen in (None, "pending"), f"charge {c.id} left {seen} for {c.status}"
            self.charges_seen[c.id] = c.status
            if c.status == "pending":
                continue
            changed = True
            FIGURES[f"charge_{c.purpose}_{c.status}"] += 1
            clearing, fees = platform(Kind.processor_clearing), platform(Kind.processor_fees)
            if c.status == "succeeded":
                if c.purpose == "topup":
                    credit = chart.wallet_account(c.customer_id, c.currency)
                elif c.purpose == "tab":
                    credit = chart.tab_account(c.customer_id, c.currency)
                    if c.attempts == 0:  # paid without dunning: the ladder goes up
                        limit = self.tab_limit[c.customer_id]
                        self.tab_limit[c.customer_id] = self.policy.raised_limit(limit)
                else:
                    p = self.bought[c.purchase_id]
                    assert p.status == "charge_pending"
                    credit = chart.payable_account(p.merchant, c.currency)
                    self._grant(p)
                self.o.move(clearing, credit, c.amount_micros)
                self.o.move(fees, clearing, c.fee_micros)
            elif c.purpose == "direct":
                p = self.bought[c.purchase_id]
                assert p.status == "charge_pending"
                p.status = "charge_declined"
        return changed

    def _grant(self, p: Purchase) -> None:
        """A purchase became paid: it must be the only paid one with an active entitlement."""
        now = self.clock.now_us
        for other in self.bought.values():
            if (other.merchant, other.customer, other.item_ref) == (
                p.merchant,
                p.customer,
                p.item_ref,
            ) and self._active(other):
                raise AssertionError(
                    f"purchase {p.id} paid while purchase {other.id} still gives access:"
                    " the customer was charged twice for one thing"
                )
        p.status = "ok"
        period = self.item_price[(p.merchant, p.item_ref)][1]
        p.ends_at_us = now + period * 1_000_000 if period else 0

    def _active(self, p: Purchase) -> bool:
        if p.status != "ok" or p.ends_at_us is None or p.refunded >= p.price:
            return False
        return p.ends_at_us == 0 or p.ends_at_us > self.clock.now_us

    def _refused(
        self, before: dict[int, tuple[int, int, int, int]], what: str, charged: bool = False
    ) -> None:
        """A refusal: nothing moved, unless a charge finished during the call."""
        FIGURES[f"refused_{what}"] += 1
        if not (self._charges_changed() or charged):
            assert self._counters() == before, f"refused {what} changed a balance"

    def _spend(self, customer: int, merchant: int, source: FundingSource, amount: int) -> None:
        debit = {
            W: chart.wallet_account(customer, "USD"),
            T: chart.tab_account(customer, "USD"),
        }.get(source) or chart.store_credit_account(customer, merchant, "USD")
        self.o.move(debit, chart.payable_account(merchant, "USD"), amount)

    def _expected_source(
        self, merchant: int, customer: int, price: int
    ) -> FundingSource | str | None:
        """The first prepaid source that pays; "direct"/"refused"; None when a charge
        (auto-reload or tab settlement) would come first and the outcome depends on it."""
        net = self.o.net
        sc = chart.store_credit_account(customer, merchant, "USD")
        policy = self.merchant_policy[merchant]
        if net[sc] >= price:
            return FundingSource.store_credit
        frozen = self._frozen(customer)
        has_pm = bool(self.customer_pm[customer])
        for source in policy:
            if source is W:
                if net[chart.wallet_account(customer, "USD")] >= price:
                    return W
                if self.auto_reload.get(customer) and has_pm:
                    return None
            elif source is T:
                if frozen:
                    continue
                owed = -net[chart.tab_account(customer, "USD")]
                if self.tab_limit[customer] - owed >= price:
                    return T
                if has_pm:
                    return None
            else:
                return "direct" if has_pm else "refused"
        return "refused"

    def _frozen(self, customer: int) -> bool:
        record = self.payments.charges.tx(lambda tx: tx.get_customer(customer))
        assert record is not None
        return record.tab_state.value == "frozen"

    # --- setup rules ----------------------------------------------------------

    @initialize(
        target=merchants, policies=st.lists(st.sampled_from(POLICIES), min_size=2, max_size=2)
    )
    def open_shops(self, policies: list[tuple[FundingSource, ...]]) -> object:
        self.payments.open_platform("USD")
        return multiple(*(self.create_merchant(p, 1_500, True, 250) for p in policies))

    @initialize(
        target=customers,
        pms=st.lists(
            st.sampled_from(["pm_ok", "", DECLINING_PAYMENT_METHOD]), min_size=2, max_size=2
        ),
    )
    def open_customers(self, pms: list[str]) -> object:
        opened = [self.create_customer(pm) for pm in pms]
        for c in opened:  # most stories start with some wallet money
            self.top_up(c, usd("20") if self.customer_pm[c] else usd("5"), "none", "new")
        return multiple(*opened)

    @initialize(target=items, prices=st.lists(st.sampled_from(PRICES), min_size=2, max_size=2))
    def open_items(self, prices: list[int]) -> object:
        # Initializers run in any order: without merchants yet, open one for the items.
        shops = sorted(self.merchant_policy) or [self.create_merchant((W, T, D), 1_500, True, 1)]
        shops = shops * 2
        return multiple(
            *(
                self.set_item(m, n, price, 0)
                for n, (m, price) in enumerate(zip(shops, prices, strict=False))
            )
        )

    @precondition(lambda self: len(self.merchant_policy) < 4)
    @rule(
        target=merchants,
        policy=st.sampled_from(POLICIES),
        guard_bps=st.sampled_from([0, 1_500, 10_000]),
        refuses=st.booleans(),
        unit_price=st.sampled_from([1, 250, 1_000_000]),
    )
    def create_merchant(
        self, policy: tuple[FundingSource, ...], guard_bps: int, refuses: bool, unit_price: int
    ) -> int:
        m = self.payments.create_merchant(
            f"m{self.counter}",
            "USD",
            funding_policy=policy,
            fee_guard_max_bps=guard_bps,
            fee_guard_refuses=refuses,
        )
        self.merchant_policy[m.id] = policy
        self.merchant_currency[m.id] = "USD"
        self.metering.set_meter(m.id, "api", unit_price)
        self.unit_price[m.id] = unit_price
        FIGURES["merchants"] += 1
        return m.id

    @precondition(lambda self: len(self.customer_pm) < 4)
    @rule(target=customers, pm=st.sampled_from(["pm_ok", "pm_ok", "", DECLINING_PAYMENT_METHOD]))
    def create_customer(self, pm: str) -> int:
        c = self.payments.create_customer(
            "USD", processor_customer_token="cus_x", payment_method_token=pm
        )
        self.customer_currency[c.id] = "USD"
        self.customer_pm[c.id] = pm
        self.tab_limit[c.id] = self.policy.first_limit_micros
        FIGURES["customers"] += 1
        return c.id

    @rule(
        target=items,
        merchant=merchants,
        n=st.integers(0, 3),
        price=st.sampled_from(PRICES),
        period_s=st.sampled_from([0, 0, 3_600, 86_400]),
    )
    def set_item(self, merchant: int, n: int, price: int, period_s: int) -> tuple[int, str]:
        ref = f"item-{n}"
        if (merchant, ref) in self.item_price:
            return (merchant, ref)  # prices are set once (a price change is its own story)
        if D in self.merchant_policy[merchant] and price % 10_000:
            # A card charges whole cents only: see the regression test at the end
            # (a sub-cent direct price is a known bug; kept out of the machine).
            price -= price % 10_000 or 0
            price = price or usd("0.01")
        self.payments.set_item(merchant, ref, ref, price, access_period_s=period_s)
        self.item_price[(merchant, ref)] = (price, period_s)
        return (merchant, ref)

    # --- top-ups and auto-reload ----------------------------------------------

    @rule(
        customer=customers,
        amount=st.sampled_from([usd(a) for a in ("5", "7.50", "20", "4.99", "5.005", "600")]),
        fault=st.sampled_from(FAULTS),
        reuse=st.sampled_from(["new", "new", "same", "changed"]),
    )
    def top_up(self, customer: int, amount: int, fault: str, reuse: str) -> None:
        used = [(k, a) for (c, k), a in self.topup_keys.items() if c == customer]
        key = self._key("topup")
        if reuse != "new" and used:
            key, first = used[-1]
            amount = first if reuse == "same" else first + usd("1")
        before = self._counters()
        self._fault(fault)
        try:
            receipt = self.payments.top_up(customer, amount, key)
        finally:
            self._fault("none")
        first = self.topup_keys.get((customer, key))
        FIGURES[f"topup_{receipt.status.value}"] += 1
        if first is not None and first != amount:
            assert receipt.status is TopUpStatus.idempotency_key_reused
            return self._refused(before, "topup")
        if first is None:
            pm = self.customer_pm[customer]
            refusal = (
                TopUpStatus.amount_below_minimum
                if amount < usd("5")
                else TopUpStatus.amount_above_maximum
                if amount > usd("500")
                else TopUpStatus.not_whole_minor_units
                if amount % 10_000
                else TopUpStatus.no_payment_method
                if not pm
                else None
            )
            if refusal is not None:
                assert receipt.status is refusal
                return self._refused(before, "topup")
            self.topup_keys[(customer, key)] = amount
        if receipt.status is TopUpStatus.ok:
            assert self.customer_pm[customer] != DECLINING_PAYMENT_METHOD
        elif first is None and fault == "none":
            assert receipt.status is TopUpStatus.charge_declined
            assert self.customer_pm[customer] == DECLINING_PAYMENT_METHOD
        self._charges_changed()

    @rule(
        customer=customers,
        threshold=st.sampled_from([0, usd("1"), usd("5")]),
        amount=st.sampled_from([0, usd("5"), usd("10"), usd("1")]),
    )
    def set_auto_reload(self, customer: int, threshold: int, amount: int) -> None:
        before = self._counters()
        refused = amount and (amount < usd("5") or not self.customer_pm[customer])
        try:
            self.payments.set_auto_reload(customer, threshold, amount)
        except PaymentsInputError:
            assert refused
            return self._refused(before, "auto_reload")
        assert not refused
        self.auto_reload[customer] = amount
        assert self._counters() == before

    # --- purchases -----------------------------------------------------------

    purchase_args: ClassVar[dict[str, object]] = {
        "target": purchases,
        "customer": customers,
        "item": items,
        "fault": st.sampled_from(FAULTS),
        "how": st.sampled_from(["new", "new", "new", "same_key", "same_key_other_item", "unknown"]),
    }

    # Purchases are the heart of the model: three rules (Hypothesis picks rules
    # uniformly) so they make up a fair share of the steps.
    @rule(**purchase_args)
    def purchase(self, customer: int, item: tuple[int, str], fault: str, how: str) -> int:
        return self._purchase(customer, item, fault, how)

    @rule(**purchase_args)
    def purchase_more(self, customer: int, item: tuple[int, str], fault: str, how: str) -> int:
        return self._purchase(customer, item, fault, how)

    @rule(**purchase_args)
    def purchase_again(self, customer: int, item: tuple[int, str], fault: str, how: str) -> int:
        return self._purchase(customer, item, fault, how)

    def _purchase(self, customer: int, item: tuple[int, str], fault: str, how: str) -> int:
        merchant, ref = item
        key = self._key("buy")
        mine = [(k, v) for (m, k), v in self.purchase_keys.items() if m == merchant]
        if how.startswith("same_key") and mine:
            key, ((_, c0, ref0), _) = mine[-1]
            if how == "same_key":
                customer, ref = int(c0), str(ref0)  # type: ignore[call-overload]
            else:
                ref = ref0 + "-x"  # type: ignore[operator]
        elif how == "unknown":
            ref = "no-such-item"
        request = (merchant, customer, ref)
        before = self._counters()
        expected = (
            self._expected_source(merchant, customer, self.item_price[(merchant, ref)][0])
            if (merchant, ref) in self.item_price
            else None
        )
        owned = [
            p
            for p in self.bought.values()
            if (p.merchant, p.customer, p.item_ref) == request and self._active(p)
        ]
        self._fault(fault)
        try:
            r = self.payments.purchase(merchant, customer, ref, key)
        finally:
            self._fault("none")
        FIGURES[f"purchase_{r.status.value}"] += 1
        first = self.purchase_keys.get((merchant, key))
        if first is not None:
            if first[0] != request:
                assert r.status is PurchaseStatus.idempotency_key_reused, r
            else:
                assert r.replayed, (r, first)
                assert r.purchase_id == first[1], (r, first)
                FIGURES["purchase_replayed"] += 1
            self._refused(before, "purchase_replay")
            return first[1]
        if (merchant, ref) not in self.item_price:
            assert r.status is PurchaseStatus.item_not_found
            self._refused(before, "purchase")
            return 0
        price = self.item_price[(merchant, ref)][0]
        if owned:
            assert r.status is PurchaseStatus.already_entitled, r
            assert r.purchase_id == owned[0].id
            self._refused(before, "purchase_owned")
            return r.purchase_id
        waiting = [
            p
            for p in self.bought.values()
            if (p.merchant, p.customer, p.item_ref) == request and p.status == "charge_pending"
        ]
        if r.replayed and waiting:
            # The fix proposed for the double charge: a new key while the charge
            # for this item waits returns that purchase (the new key is not kept).
            assert r.purchase_id == waiting[0].id, (r, waiting)
            assert r.status is PurchaseStatus.charge_pending, r
            self._refused(before, "purchase_waiting")
            return r.purchase_id
        if r.purchase_id == 0 or r.status not in (
            PurchaseStatus.ok,
            PurchaseStatus.charge_pending,
            PurchaseStatus.charge_declined,
        ):
            assert r.status in (
                PurchaseStatus.insufficient_funds,
                PurchaseStatus.tab_frozen,
                PurchaseStatus.no_payment_method,
                PurchaseStatus.fee_guard_refused,
            ), r
            assert expected not in PREPAID, (expected, r)
            self._refused(before, "purchase")
            return 0
        assert r.price_micros == price
        FIGURES[f"purchase_paid_by_{r.funding and r.funding.value}"] += 1
        assert r.funding is not None
        self.purchase_keys[(merchant, key)] = (request, r.purchase_id)
        p = Purchase(r.purchase_id, merchant, customer, ref, price, r.funding, "charge_pending")
        self.bought[p.id] = p
        if expected is not None:
            want = D if expected in ("direct", "refused") else expected
            assert r.funding is want, (expected, r)
        if r.funding is not D:
            assert r.status is PurchaseStatus.ok
            self._charges_changed()  # an auto-reload or settlement first
            self._spend(customer, merchant, r.funding, price)
            self._grant(p)
        else:
            self._charges_changed()
            assert r.status.value == p.status, (r, p)
        return p.id

    # --- refunds ----------------------------------------------------------------

    @rule(
        purchase=purchases,
        share=st.sampled_from(["full", "half", "cent", "over", "odd"]),
        destination=st.sampled_from(["original", "original", "wallet"]),
        retry=st.booleans(),
    )
    def refund(self, purchase: int, share: str, destination: str, retry: bool) -> None:
        p = self.bought.get(purchase)
        if p is None:
            return
        left = p.price - p.refunded
        amount = {
            "full": left,
            "half": left // 2 // 10_000 * 10_000 or left,
            "cent": 10_000,
            "over": left + 1,
            "odd": 3,
        }[share]
        key = self._key("refund")
        mine = [(k, v) for (pid, k), v in self.refund_keys.items() if pid == purchase]
        if retry and mine:
            key, (amount, destination) = mine[-1]
        before = self._counters()
        r = self.payments.refunds.refund(purchase, amount, key, destination=destination)
        FIGURES[f"refund_{r.status.value}{'_replayed' if r.replayed else ''}"] += 1
        if (purchase, key) in self.refund_keys:
            assert r.replayed, r
            assert r.status is RefundStatus.ok, r
            return self._refused(before, "refund_replay")
        to_card = destination == "original" and p.funding is D
        if p.status != "ok":
            assert r.status is RefundStatus.purchase_not_paid, r
        elif to_card and amount % 10_000:
            assert r.status is RefundStatus.amount_invalid, r
        elif amount > left or amount <= 0:
            assert r.status is (
                RefundStatus.exceeds_refundable if amount > 0 else RefundStatus.amount_invalid
            ), r
        else:
            assert r.status is RefundStatus.ok, r
            self.refund_keys[(purchase, key)] = (amount, destination)
            p.refunded += amount
            payable = chart.payable_account(p.merchant, "USD")
            if to_card:
                self.o.move(payable, platform(Kind.processor_clearing), amount)
            elif destination == "wallet" or p.funding is D:
                self.o.move(payable, chart.wallet_account(p.customer, "USD"), amount)
            elif p.funding is T:
                self.o.move(payable, chart.tab_account(p.customer, "USD"), amount)
            elif p.funding is W:
                self.o.move(payable, chart.wallet_account(p.customer, "USD"), amount)
            else:
                sc = chart.store_credit_account(p.customer, p.merchant, "USD")
                self.o.move(payable, sc, amount)
            assert p.refunded <= p.price
            return
        self._refused(before, "refund")

    # --- time and jobs -------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 61, 3_600, 86_400, 31 * 86_400]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(fault=st.sampled_from(FAULTS))
    def close_tab_periods(self, fault: str) -> None:
        self._fault(fault)
        try:
            self.payments.charges.close_tab_periods()
        finally:
            self._fault("none")
        self._charges_changed()

    @rule(fault=st.sampled_from(FAULTS))
    def run_due(self, fault: str) -> None:
        self._fault(fault)
        try:
            self.payments.charges.run_due()
        finally:
            self._fault("none")
        self._charges_changed()

    @rule()
    def recover(self) -> None:
        """Faults off, past the retry back-off: every timed-out charge is credited."""
        self.clock.advance(TIMEOUT_RETRY_S)
        self.payments.charges.run_due()
        self._charges_changed()
        assert reconcile_processor(self.store, self.processor.succeeded_charges()) == []
        FIGURES["recoveries"] += 1

    @rule()
    def expire_holds(self) -> None:
        before = self._counters()
        self.payments.ledger.expire_holds()
        assert self._counters() == before  # the payment models hold nothing

    # --- gift cards ------------------------------------------------------------------

    @rule(
        value=st.sampled_from([usd("0.10"), usd("1"), usd("5")]),
        expires_days=st.sampled_from([0, 1, 40]),
        merchant=st.one_of(st.just(0), merchants),
    )
    def issue_card(self, value: int, expires_days: int, merchant: int) -> None:
        expires = self.clock.now_us + expires_days * 86_400_000_000 + 123 if expires_days else 0
        key = self._key("cards")
        before = self._counters()
        if merchant:
            batch = self.cards.issue_store_credit(merchant, 1, value, key, expires_at_us=expires)
        else:
            batch = self.cards.issue_gift_cards(1, value, "USD", key, expires_at_us=expires)
        FIGURES[f"card_issue_{batch.status.value}"] += 1
        if merchant and self.o.net[chart.payable_account(merchant, "USD")] < value:
            assert batch.status is IssueStatus.merchant_funds_insufficient
            return self._refused(before, "card_issue")
        assert batch.status is IssueStatus.ok, batch
        [card_id], [code] = batch.card_ids, batch.codes
        funding = (
            chart.payable_account(merchant, "USD") if merchant else platform(Kind.gift_card_funding)
        )
        self.o.move(funding, gc.card_account_id(card_id, "USD"), value)
        self.gift_cards.append(Card(card_id, code, merchant, expires, value))

    @rule(data=st.data(), customer=customers)
    def redeem_card(self, data: st.DataObject, customer: int) -> None:
        if not self.gift_cards:
            return
        # Mostly a card with value left, store credit first (to buy with it next).
        unspent = (
            [c for c in self.gift_cards if c.remaining and c.merchant]
            or [c for c in self.gift_cards if c.remaining]
            or self.gift_cards
        )
        pool = unspent if data.draw(st.booleans()) else self.gift_cards
        card = data.draw(st.sampled_from(pool))
        before = self._counters()
        r = self.cards.redeem(customer, card.code, self._key("redeem"))
        FIGURES[f"card_redeem_{r.status.value}"] += 1
        if card.expires_at_us and self.clock.now_us >= card.expires_at_us:
            assert r.status is RedeemStatus.card_expired, r
        elif card.remaining == 0:
            assert r.status is RedeemStatus.card_spent, r
        else:
            assert r.status is RedeemStatus.ok, r
            assert r.amount_micros == card.remaining, r
            dest = (
                chart.store_credit_account(customer, card.merchant, "USD")
                if card.merchant
                else chart.wallet_account(customer, "USD")
            )
            self.o.move(gc.card_account_id(card.id, "USD"), dest, card.remaining)
            FIGURES["store_credit_redeemed" if card.merchant else "gift_card_redeemed"] += 1
            card.remaining = 0
            return
        self._refused(before, "card_redeem")

    @rule(data=st.data(), merchant=merchants, amount=st.sampled_from([usd("0.5"), usd("3")]))
    def till_spend(self, data: st.DataObject, merchant: int, amount: int) -> None:
        if not self.gift_cards:
            return
        card = data.draw(st.sampled_from(self.gift_cards))
        before = self._counters()
        r = self.cards.redeem_at_pos(merchant, card.code, amount, self._key("till"))
        FIGURES[f"card_till_{r.status.value}"] += 1
        if r.status is RedeemStatus.ok:
            assert not card.expired
            assert card.remaining >= amount
            assert card.merchant in (0, merchant)
            card.remaining -= amount
            self.o.move(
                gc.card_account_id(card.id, "USD"), chart.payable_account(merchant, "USD"), amount
            )
            return
        assert r.status in (
            RedeemStatus.card_expired,
            RedeemStatus.card_spent,
            RedeemStatus.wrong_merchant,
            RedeemStatus.amount_above_remaining,
        ), r
        self._refused(before, "card_till")

    @rule(customer=customers, item=items)
    def spend_store_credit(self, customer: int, item: tuple[int, str]) -> None:
        """The merchant grants store credit worth the item out of its earnings;
        the customer redeems it and buys the item (store credit pays first)."""
        merchant, price = item[0], self.item_price[item][0]
        if self.o.net[chart.payable_account(merchant, "USD")] < price:
            return
        self.issue_card(price, 0, merchant)
        card = self.gift_cards[-1]
        r = self.cards.redeem(customer, card.code, self._key("redeem"))
        assert r.status is RedeemStatus.ok, r
        credit = chart.store_credit_account(customer, merchant, "USD")
        self.o.move(gc.card_account_id(card.id, "USD"), credit, price)
        card.remaining = 0
        FIGURES["store_credit_redeemed"] += 1
        self._purchase(customer, item, "none", "new")

    @rule()
    def expire_cards(self) -> None:
        run = self.cards.expire_gift_cards()
        expected = 0
        for card in self.gift_cards:
            if card.expires_at_us and not card.expired and card.expires_at_us <= self.clock.now_us:
                card.expired = True
                expected += card.remaining
                dest = (
                    chart.payable_account(card.merchant, "USD")
                    if card.merchant
                    else platform(Kind.breakage_income)
                )
                self.o.move(gc.card_account_id(card.id, "USD"), dest, card.remaining)
                card.remaining = 0
        assert sum(run.breakage_micros.values()) == expected

    # --- tips and usage -------------------------------------------------------------

    @rule(
        merchant=merchants,
        customer=customers,
        amount=st.sampled_from([usd("0.01"), usd("0.50"), usd("2"), 5]),
    )
    def tip(self, merchant: int, customer: int, amount: int) -> None:
        before = self._counters()
        r = self.tips.tip(merchant, customer, amount, self._key("tip"))
        FIGURES[f"tip_{r.status.value}"] += 1
        charged = self._charges_changed()  # a tab settlement may come first
        if r.ok:
            assert r.funding in (W, T)
            assert r.funding in self.merchant_policy[merchant]
            self._spend(customer, merchant, r.funding, amount)  # type: ignore[arg-type]
        else:
            self._refused(before, "tip", charged)

    @rule(merchant=merchants, customer=customers, quantity=st.integers(1, 2_000))
    def usage(self, merchant: int, customer: int, quantity: int) -> None:
        before = self._counters()
        r = self.metering.record_usage(merchant, customer, "api", quantity, self._key("use"))
        assert r.ok, r
        assert self._counters() == before  # recorded, not billed
        self.usage_unbilled[(merchant, customer)] += quantity

    @rule()
    def aggregate_usage(self) -> None:
        self.clock.advance(1)
        report = self.metering.aggregate_usage(self.clock.now_us)
        for posting in report.postings:
            group = (posting.merchant_id, posting.customer_id)
            assert posting.quantity == self.usage_unbilled[group]
            assert posting.amount_micros == posting.quantity * self.unit_price[group[0]]
            self.usage_unbilled[group] = 0
            funding = FundingSource(posting.funding)
            self._spend(posting.customer_id, posting.merchant_id, funding, posting.amount_micros)
            FIGURES["usage_postings"] += 1
        for unpaid in report.unpaid:
            group = (unpaid.merchant_id, unpaid.customer_id)
            assert unpaid.amount_micros == self.usage_unbilled[group] * self.unit_price[group[0]]
            FIGURES["usage_unpaid"] += 1

    # --- invariants -----------------------------------------------------------------

    @invariant()
    def books_agree(self) -> None:
        FIGURES["steps"] += 1
        self._charges_changed()
        report = reconcile(self.store)
        assert report.ok, report.violations
        pending = sum(1 for s in self.charges_seen.values() if s == "pending")
        problems = reconcile_processor(self.store, self.processor.succeeded_charges())
        if pending == 0:
            assert problems == []
        else:
            assert len(problems) <= pending, problems
            assert all("was never credited" in v.detail for v in problems), problems
        with self.store.read() as reader:
            accounts = {a.id: a for a in reader.iter_accounts()}
        actual = {
            i: a.credits_posted_micros - a.debits_posted_micros
            for i, a in accounts.items()
            if a.credits_posted_micros - a.debits_posted_micros
        }
        expected = {i: v for i, v in self.o.net.items() if v}
        assert actual == expected, _diff(actual, expected)
        per_currency: dict[str, int] = defaultdict(int)
        for a in accounts.values():
            assert not a.debits_pending_micros
            assert not a.credits_pending_micros
            per_currency[a.currency] += a.credits_posted_micros - a.debits_posted_micros
        assert all(v == 0 for v in per_currency.values()), per_currency
        for c, limit in self.tab_limit.items():
            tab = accounts[chart.tab_account(c, "USD")]
            assert tab.credit_limit_micros == limit
            assert tab.debits_posted_micros - tab.credits_posted_micros <= limit
            assert self.o.net[chart.wallet_account(c, "USD")] >= 0
        for p in self.bought.values():
            assert 0 <= p.refunded <= p.price
        active: dict[tuple[int, int, str], int] = defaultdict(int)
        for p in self.bought.values():
            if self._active(p):
                active[(p.merchant, p.customer, p.item_ref)] += 1
                assert self.payments.has_access(p.merchant, p.customer, p.item_ref)
        assert all(n == 1 for n in active.values()), active


def _diff(actual: dict[int, int], expected: dict[int, int]) -> str:
    keys = sorted(set(actual) | set(expected))
    return "; ".join(
        f"{k}: ledger {actual.get(k, 0)} oracle {expected.get(k, 0)}"
        for k in keys
        if actual.get(k, 0) != expected.get(k, 0)
    )


def _run(opener: Callable[[], PaymentsStore], examples: int) -> dict[str, int]:
    FIGURES.clear()
    PaymentsMachine.open_fresh_store = staticmethod(opener)  # type: ignore[assignment]
    run_state_machine_as_test(
        PaymentsMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            derandomize=not os.environ.get("MICROPAY_HYPOTHESIS_RANDOM"),
            database=None,
        ),
    )
    figures = dict(sorted(FIGURES.items()))
    print(f"\npayments stateful figures: {figures} failures=0")
    assert figures.get("examples", 0) >= 1
    assert figures.get("steps", 0) > figures["examples"]
    return figures


def test_payments_stateful_sqlite(sqlite_template: Path, tmp_path: Path) -> None:
    counter = iter(range(1_000_000))

    def opener() -> PaymentsStore:
        path = tmp_path / f"example-{next(counter)}.db"
        shutil.copyfile(sqlite_template, path)
        return cast(PaymentsStore, open_store(f"sqlite:///{path}"))

    figures = _run(opener, EXAMPLES)
    assert figures.get("purchase_ok", 0) >= EXAMPLES // 3


@pytest.mark.postgres
def test_payments_stateful_postgres(pg_schemas: PgSchemas) -> None:
    require_pg()

    def opener() -> PaymentsStore:
        return cast(PaymentsStore, open_store(pg_schemas.new_url()))

    _run(opener, PG_EXAMPLES)


# --- regressions found by the machine --------------------------------------------


def test_a_direct_purchase_of_a_sub_cent_price_is_refused_not_left_stuck(
    store: PaymentsStore, clock: FakeClock
) -> None:
    """Found by the machine: a 1.2345 USD item at a merchant that takes cards.

    The fee guard allows it (5% + 0.05 is under 15%), so the purchase records a
    pending direct charge of 1.2345 USD and commits; ``ChargeEngine.run`` then
    raises ``ValueError`` (a card charges whole cents only). The purchase stays
    ``charge_pending`` forever and every later ``run_due`` raises on it, which
    stalls every other customer's recovery and dunning. Expected: a clear
    refusal that writes nothing, and the due-charge job unaffected.
    """
    processor = SimulatedProcessor()
    payments = Payments(store, processor, clock=clock)
    shop = payments.create_merchant("Odd Prices", "USD", funding_policy=(D,))
    buyer = payments.create_customer("USD", payment_method_token="pm_ok")
    payments.set_item(shop.id, "odd", "Odd", usd("1.2345"))
    before = payments.charges.tx(lambda tx: tx.charges_for_reconcile())
    receipt = payments.purchase(shop.id, buyer.id, "odd", "k1")
    assert receipt.status is PurchaseStatus.fee_guard_refused, receipt
    assert payments.charges.tx(lambda tx: tx.charges_for_reconcile()) == before
    assert payments.charges.run_due() == []
    assert reconcile(store).ok
    assert reconcile_processor(store, processor.succeeded_charges()) == []


def test_a_second_key_while_a_direct_charge_is_pending_does_not_charge_twice(
    store: PaymentsStore, clock: FakeClock
) -> None:
    """Found while building the machine: one item, two card charges, two entitlements.

    The first purchase's card charge times out after the processor charged
    (``charge_pending``); the customer taps "buy" again, which sends a new key.
    The service sees no entitlement yet and starts a second charge, which
    succeeds; recovery then completes the first one too: 10.00 USD taken for a
    5.00 USD item (RELIABILITY: "a customer is never charged twice for one
    thing"). Expected: the second request returns the pending purchase.
    """
    processor = SimulatedProcessor()
    payments = Payments(store, processor, clock=clock)
    shop = payments.create_merchant("Cards Only", "USD", funding_policy=(D,))
    buyer = payments.create_customer("USD", payment_method_token="pm_ok")
    payments.set_item(shop.id, "book", "Book", usd("5"))
    processor.faults.timeout_after_charge = 1.0
    first = payments.purchase(shop.id, buyer.id, "book", "tap-1")
    processor.faults.timeout_after_charge = 0.0
    assert first.status is PurchaseStatus.charge_pending
    second = payments.purchase(shop.id, buyer.id, "book", "tap-2")
    clock.advance(TIMEOUT_RETRY_S)
    payments.charges.run_due()
    assert reconcile(store).ok
    assert reconcile_processor(store, processor.succeeded_charges()) == []
    assert second.purchase_id == first.purchase_id, (first, second)
    assert list(processor.succeeded_charges().values()) == [(500, "USD")]


def test_a_purchase_above_the_tab_limit_does_not_settle_the_tab_for_nothing(
    store: PaymentsStore, clock: FakeClock
) -> None:
    """Found by the machine: settling cannot help when the price is above the limit.

    Bob owes 0.30 on a 1.00 tab and buys a 5.00 item at a tab-only merchant.
    The funding choice asks for a settlement because the tab cannot pay, so his
    card is charged 0.30 (a 0.065 fee, a fifth of it; a 0.01 settlement costs
    0.0505, more than it collects), and then the purchase is refused anyway:
    even the limit raised by a settlement paid on time (2.00) is below the
    price. The same happens to tips.
    Expected: ``insufficient_funds`` at once, no processor charge.
    """
    processor = SimulatedProcessor()
    payments = Payments(store, processor, clock=clock)
    shop = payments.create_merchant("Tab Only", "USD", funding_policy=(T,))
    bob = payments.create_customer("USD", payment_method_token="pm_ok")
    payments.set_item(shop.id, "song", "Song", usd("0.30"))
    payments.set_item(shop.id, "album", "Album", usd("5"))
    assert payments.purchase(shop.id, bob.id, "song", "k1").funding is T
    refused = payments.purchase(shop.id, bob.id, "album", "k2")
    assert refused.status is PurchaseStatus.insufficient_funds
    assert processor.succeeded_charges() == {}
    assert reconcile(store).ok
