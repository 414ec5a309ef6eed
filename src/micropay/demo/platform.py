"""The demo platform: publishers, a music store, customers and a simulated month.

Everything goes through the real services (``Payments``, ``Payouts``, ``Tips``)
on the given store, with the ``SimulatedProcessor`` and a clock moved by hand
from 31 days ago up to now, so the served API carries on where the month ends.
Merchants get test-mode API keys the way the API creates them (hashed rows in
the same transaction as the merchant); customers are registered to a "home"
merchant, whose secret key can list and charge them.

Three kinds of customer exercise the three payment models:

- ``wallet``: topped up with a card charge, then auto-reloaded when low;
- ``tab``: no prepaid money; purchases go on a post-pay tab, settled in one
  card charge when full and at the tab's period end (the month end);
- ``direct``: no wallet and no tab (credit line 0): each purchase is its own
  card charge (pay-as-you-go), so they buy the more expensive things.

The music store splits each track's proceeds between artists and a label
(``Payouts`` hooked into every paid purchase), after a 10 % platform fee.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from micropay.api import keys as api_keys
from micropay.api.runtime import api_tx
from micropay.payments import chart
from micropay.payments.models import Customer, Merchant, PurchaseStatus, TabPolicy, TabState
from micropay.payouts.splits import PlatformFee, Share
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.billing.tips import Tips
from micropay.service.payments import Payments
from micropay.service.payouts import Payouts
from micropay.service.ports import PaymentsStore, PaymentsWriteTx
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import ReconcileReport, reconcile
from micropay.store import open_store
from micropay.store.api_sql import ApiKeyRow
from micropay.webhooks.outbox import attach as attach_outbox

CURRENCY = "USD"
DAYS = 31
DAY_US = 86_400 * 1_000_000
MODE = "test"
KINDS = ("wallet", "tab", "direct")
READS_PER_DAY = {"wallet": 1.0, "tab": 0.6, "direct": 0.2}

# (name, [(item_ref, title, price in micros, access period in seconds)])
PUBLISHERS: list[tuple[str, list[tuple[str, str, int, int]]]] = [
    (
        "The Daily Byte",
        [
            (f"article-{n}", f"Daily Byte article {n}", price, 0)
            for n, price in enumerate([50_000, 100_000, 150_000, 250_000, 400_000, 90_000], 1)
        ]
        + [("day-pass", "Daily Byte day pass", 990_000, 86_400)],
    ),
    (
        "Long Reads Weekly",
        [
            (f"longread-{n}", f"Long read {n}", price, 0)
            for n, price in enumerate([300_000, 450_000, 500_000, 750_000], 1)
        ]
        + [("report-2026", "Annual industry report", 4_990_000, 0)],
    ),
]
MUSIC_STORE = "Chart Music Store"
TRACKS = [(f"track-{n}", f"Track {n}", 990_000, 0) for n in range(1, 9)] + [
    ("album-1", "Album: Night Drives", 7_990_000, 0),
    ("album-2", "Album: Morning Light", 8_990_000, 0),
]
# Who shares each track's proceeds (after the platform fee), in basis points.
ARTISTS = ("Ada Lyric", "Ben Chord", "Cleo Bass")
LABEL = "Skyline Records"
PLATFORM_FEE_BPS = 1_000


class DemoClock:
    """A clock the demo moves by hand (microseconds since the epoch)."""

    def __init__(self, start_us: int) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us


@dataclass(frozen=True, slots=True)
class DemoMerchant:
    id: int
    public_id: str
    name: str
    secret_key: str  # shown once: only this run knows it
    items: tuple[str, ...]


@dataclass
class DemoResult:
    merchants: list[DemoMerchant]
    operator_key: str
    customers: dict[str, list[str]]  # kind -> public ids
    home_customers: dict[int, list[str]]  # merchant id -> customer public ids it owns
    purchases: Counter[str] = field(default_factory=Counter)  # funding source -> count
    refused: Counter[str] = field(default_factory=Counter)  # status -> count
    gross_micros: int = 0
    tips: int = 0
    card_charges: Counter[str] = field(default_factory=Counter)  # purpose -> succeeded charges
    tab_settlements_at_month_end: int = 0
    payee_balances: dict[str, dict[str, int]] = field(default_factory=dict)
    report: ReconcileReport | None = None
    processor_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def reconcile_ok(self) -> bool:
        return self.report is not None and self.report.ok and not self.processor_problems


Progress = Callable[[int], None]


def _no_progress(_steps: int) -> None:
    return None


def _kind_of(index: int) -> str:
    """Half the customers use wallets, a third tabs, the rest pay as they go."""
    slot = (index * 0.6180339887498949) % 1.0
    return "wallet" if slot < 0.5 else "tab" if slot < 0.83 else "direct"


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, product = math.exp(-lam), 0, rng.random()
    while product > threshold and k < 100:
        k += 1
        product *= rng.random()
    return k


def _no_tab(tx: PaymentsWriteTx, customer: Customer) -> None:
    """A pay-as-you-go customer has no tab: its credit line is 0."""
    tx.set_credit_limit(chart.tab_account(customer.id, customer.currency), 0)
    tx.update_customer_tab(customer.id, 0, TabState.open, customer.tab_opened_at_us)


def new_api_key(tx: Any, kind: str, merchant_id: int | None, now_us: int) -> str:
    """A test-mode key written in ``tx`` (hashed, as the API stores keys); its token."""
    new = api_keys.generate(kind, MODE)
    row = ApiKeyRow(new.parsed.lookup, new.secret_sha256, kind, MODE, merchant_id, now_us, None)
    api_tx(tx).insert_api_key(row)
    return new.token


class DemoWorld:
    """The services over one store, and the demo's parties as they are created."""

    def __init__(self, database_url: str, start_us: int) -> None:
        self.start_us = start_us
        self.clock = DemoClock(start_us)
        self.processor = SimulatedProcessor()
        self.store = cast(PaymentsStore, open_store(database_url))
        # Demo customers start at the top of the tab trust ladder (5.00): a
        # month of articles then mostly settles at the month end, in one charge.
        policy = TabPolicy(first_limit_micros=TabPolicy().cap_micros)
        self.payments = Payments(self.store, self.processor, clock=self.clock, tab_policy=policy)
        attach_outbox(self.payments)  # webhook events, as the API writes them
        self.payouts = Payouts(self.payments, attach=True)
        self.tips = Tips(self.payments)
        self.payees: list[tuple[str, int]] = []

    def close(self) -> None:
        self.store.close()

    def merchant(
        self, name: str, items: list[tuple[str, str, int, int]], **options: Any
    ) -> DemoMerchant:
        tokens: list[str] = []

        def register(tx: PaymentsWriteTx, m: Merchant) -> None:
            api_tx(tx).insert_api_merchant(m.id, MODE, self.clock())
            tokens.append(new_api_key(tx, "secret", m.id, self.clock()))

        made = self.payments.create_merchant(name, CURRENCY, also=register, **options)
        for ref, title, price, period_s in items:
            self.payments.set_item(made.id, ref, title, price, access_period_s=period_s)
        return DemoMerchant(made.id, made.public_id, name, tokens[0], tuple(i[0] for i in items))

    def customer(self, index: int, kind: str, home: DemoMerchant) -> Customer:
        def register(tx: PaymentsWriteTx, c: Customer) -> None:
            if kind == "direct":
                _no_tab(tx, c)
            api_tx(tx).insert_api_customer(c.id, home.id, self.clock())

        customer = self.payments.create_customer(
            CURRENCY,
            processor_customer_token=f"cus_demo_{index}",
            payment_method_token=f"pm_demo_{index}",
            also=register,
        )
        if kind == "wallet":
            self.payments.top_up(customer.id, 10_000_000, f"demo-first-topup-{index}")
            self.payments.set_auto_reload(customer.id, 1_000_000, 10_000_000)
        return customer

    def operator_key(self) -> str:
        return self.payments.charges.tx(lambda tx: new_api_key(tx, "operator", None, self.clock()))


def _set_up_music_store(world: DemoWorld, store: DemoMerchant) -> None:
    payouts = world.payouts
    payouts.set_platform_fee(store.id, PlatformFee(fee_bps=PLATFORM_FEE_BPS))
    label = payouts.create_payee(LABEL, CURRENCY, "ba_demo_label", hold_s=7 * 86_400)
    artists = [
        payouts.create_payee(name, CURRENCY, f"ba_demo_artist_{n}", hold_s=7 * 86_400)
        for n, name in enumerate(ARTISTS)
    ]
    world.payees = [(p.name, p.id) for p in (*artists, label)]
    for n, (ref, *_rest) in enumerate(TRACKS):
        artist = artists[n % len(artists)]
        payouts.set_split(store.id, ref, [Share(artist.id, 7_000), Share(label.id, 3_000)])


def build_demo(
    database_url: str,
    *,
    customers: int,
    seed: int,
    progress: Progress = _no_progress,
    now_us: int | None = None,
) -> DemoResult:
    """Create the platform and run its month on ``database_url`` (already migrated).

    ``progress`` is called with a number of steps done: ``customers`` for the
    set-up, then one per simulated day; ``steps(customers)`` is the total.
    """
    if customers < 1:
        raise ValueError("the demo needs at least one customer")
    started = time.perf_counter()
    rng = random.Random(seed)
    end_us = now_us if now_us is not None else time.time_ns() // 1_000
    world = DemoWorld(database_url, end_us - DAYS * DAY_US)
    try:
        publishers = [world.merchant(name, items) for name, items in PUBLISHERS]
        # Card fees on a 0.99 track would trip the fee guard for pay-as-you-go:
        # the store accepts them (it chose to), the fee is reported on the charge.
        music = world.merchant(MUSIC_STORE, TRACKS, fee_guard_refuses=False)
        _set_up_music_store(world, music)
        merchants = [*publishers, music]
        for publisher in publishers:
            world.tips.set_limits(publisher.id, 100_000, 5_000_000)
        result = DemoResult(
            merchants=merchants,
            operator_key="",  # made last: its presence marks a finished build
            customers={k: [] for k in KINDS},
            home_customers={m.id: [] for m in merchants},
        )
        people: list[tuple[Customer, str]] = []
        for i in range(customers):
            kind = _kind_of(i)
            home = merchants[i % len(merchants)]
            made = world.customer(i, kind, home)
            people.append((made, kind))
            result.customers[kind].append(made.public_id)
            result.home_customers[home.id].append(made.public_id)
            progress(1)
        for day in range(DAYS):
            _simulate_day(world, rng, day, people, merchants, result)
            progress(1)
        # Month end: every tab's billing period closes; payees' holds release.
        world.clock.now_us = end_us
        closed = world.payments.charges.close_tab_periods()
        result.tab_settlements_at_month_end = len(closed)
        world.payouts.release_due()
        _summarise(world, result)
        result.operator_key = world.operator_key()
    finally:
        world.close()
    result.seconds = time.perf_counter() - started
    return result


def steps(customers: int) -> int:
    return customers + DAYS


def _simulate_day(
    world: DemoWorld,
    rng: random.Random,
    day: int,
    people: list[tuple[Customer, str]],
    merchants: list[DemoMerchant],
    result: DemoResult,
) -> None:
    base = world.start_us + day * DAY_US
    spacing_us = DAY_US // (len(people) + 1)
    for n, (customer, kind) in enumerate(people):
        reads = _poisson(rng, READS_PER_DAY[kind])
        for r in range(reads):
            at_us = base + n * spacing_us + r * 1_000_000
            world.clock.now_us = max(world.clock.now_us + 1, at_us)
            if kind == "tab":  # tab readers read articles
                merchant = rng.choice(merchants[:-1])
                item = rng.choice(merchant.items[:-1])
            elif kind == "direct":  # pay-as-you-go: a pass, a report or an album
                merchant = rng.choice(merchants)
                item = merchant.items[-1]
            else:
                merchant = rng.choice(merchants)
                item = rng.choice(merchant.items[:-1])
            receipt = world.payments.purchase(merchant.id, customer.id, item, f"d{day}-c{n}-{r}")
            if receipt.status is PurchaseStatus.ok and receipt.funding is not None:
                result.purchases[receipt.funding.value] += 1
                result.gross_micros += receipt.price_micros
            elif receipt.status is not PurchaseStatus.already_entitled:
                result.refused[receipt.status.value] += 1
        if kind != "direct" and rng.random() < 0.02:
            publisher = merchants[n % 2]
            tip = world.tips.tip(publisher.id, customer.id, 500_000, f"tip-d{day}-c{n}")
            result.tips += int(tip.ok)


def _summarise(world: DemoWorld, result: DemoResult) -> None:
    with world.store.write() as tx:
        charges = tx.charges_for_reconcile()
    for charge in charges:
        if charge.status == "succeeded":
            result.card_charges[charge.purpose] += 1
    for name, payee_id in world.payees:
        balances = world.payouts.balances(payee_id)
        result.payee_balances[name] = {bucket.name: v for bucket, v in balances.items()}
    result.report = reconcile(world.store)
    problems = reconcile_processor(world.store, world.processor.succeeded_charges())
    result.processor_problems = [str(p) for p in problems]


class NotADemoError(ValueError):
    """The database holds other data than a micropay demo: it is left alone."""


class UnfinishedDemoError(NotADemoError):
    """The database holds a demo whose build stopped half-way (no operator key yet)."""


def reopen_demo(database_url: str) -> DemoResult | None:
    """The demo already built on ``database_url``, with new test keys; None if it is empty.

    Keys are shown once and stored hashed, so a rerun cannot show the old ones:
    it mints a new secret key per demo merchant and a new operator key (the old
    keys keep working). Raises :class:`NotADemoError` for any other data.
    """
    names = [name for name, _ in PUBLISHERS] + [MUSIC_STORE]
    world = DemoWorld(database_url, time.time_ns() // 1_000)
    try:

        def read(tx: Any) -> list[Merchant | None]:
            return [tx.get_merchant(i) for i in range(1, len(names) + 1)]

        found = world.payments.charges.tx(read)
        if found[0] is None:
            return None
        if [m.name if m else None for m in found] != names:
            raise NotADemoError("the database holds data that is not a micropay demo")
        if not world.payments.charges.tx(lambda tx: api_tx(tx).list_api_keys(None)):
            raise UnfinishedDemoError("the demo in this database was not finished (interrupted?)")
        merchants = []
        items = [[i[0] for i in catalogue] for _, catalogue in PUBLISHERS] + [
            [i[0] for i in TRACKS]
        ]
        home: dict[int, list[str]] = {}
        for merchant, refs in zip(found, items, strict=True):
            assert merchant is not None

            def mint(tx: Any, m: Merchant = merchant) -> tuple[str, list[str]]:
                token = new_api_key(tx, "secret", m.id, world.clock())
                return token, api_tx(tx).list_api_customers(m.id, 0, 3)

            token, home[merchant.id] = world.payments.charges.tx(mint)
            merchants.append(
                DemoMerchant(merchant.id, merchant.public_id, merchant.name, token, tuple(refs))
            )
        result = DemoResult(
            merchants=merchants,
            operator_key=world.operator_key(),
            customers={k: [] for k in KINDS},
            home_customers=home,
        )
        result.report = reconcile(world.store)
        return result
    finally:
        world.close()


__all__ = [
    "DemoMerchant",
    "DemoResult",
    "NotADemoError",
    "UnfinishedDemoError",
    "build_demo",
    "reopen_demo",
    "steps",
]
