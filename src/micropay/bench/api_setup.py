"""Setup for ``micropay bench api``: merchants, API keys, customers, items and top-ups.

Everything goes through the same service calls the API's routes make
(:class:`~micropay.service.payments.Payments` with the API's own rows added in
the same transaction, and :func:`micropay.api.admin.create_key`), in this
process, before the server starts: the setup is fast and timed apart, and the
server then starts on a database exactly as the API would have left it.

How customers map to merchants and keys (see :mod:`micropay.bench.api` for why):
customer ``i < customers // 2`` belongs to the hot merchant (merchant 0), the
others to merchants 1..99 round-robin. Each merchant's customers are split in
groups, one secret key per group, so that about :data:`KEYS_TARGET` keys carry
the whole load.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from micropay.api.admin import create_key
from micropay.api.runtime import api_tx
from micropay.bench.api_load import BenchCustomer
from micropay.payments.models import Customer, FundingSource, Merchant, TopUpStatus
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.store import open_store

CURRENCY = "USD"
MERCHANTS = 100
PRICE_MICROS = 100_000  # 0.10 USD
FUNDING_MICROS = 20_000_000  # 20 USD a wallet, as in the ledger workload: 200 purchases
# A customer meets an article it still holds only past ITEMS_PER_MERCHANT purchases a
# second; a tiny run (few customers, a fast server) must stay under that too.
ITEMS_PER_MERCHANT = 256
ITEM_ACCESS_S = 1
KEYS_TARGET = 200
PAYMENT_METHOD = "pm_bench_ok"
MODE = "test"


class ApiBenchError(RuntimeError):
    """The benchmark could not run (setup refused, the server did not start, a generator died)."""


@dataclass(frozen=True, slots=True)
class Population:
    customers: list[BenchCustomer]
    merchants: int
    keys: int
    items: list[str]


def item_refs() -> list[str]:
    return [f"article-{n:03d}" for n in range(ITEMS_PER_MERCHANT)]


def merchant_of(index: int, customers: int) -> int:
    """The merchant (0 = hot) that customer ``index`` belongs to."""
    hot = customers // 2
    return 0 if index < hot else 1 + (index - hot) % (MERCHANTS - 1)


def set_up(database_url: str, customers: int, *, threads: int = 1) -> Population:
    """Create the population on a fresh migrated database; return what the generator needs."""
    owner = [merchant_of(i, customers) for i in range(customers)]
    per_merchant = [owner.count(m) for m in range(MERCHANTS)]
    customers_per_key = max(1, math.ceil(customers / KEYS_TARGET))
    items = item_refs()

    main = _open_payments(database_url)
    try:
        merchants = [_create_merchant(main, m) for m in range(MERCHANTS)]
        selling = [m for m, count in zip(merchants, per_merchant, strict=True) if count]
        # One article through the validating call, then the catalogue in one transaction.
        first = main.set_item(
            selling[0].id, items[0], items[0], PRICE_MICROS, access_period_s=ITEM_ACCESS_S
        )

        def catalogue(tx: Any) -> None:
            for merchant in selling:
                for ref in items:
                    tx.upsert_item(replace(first, merchant_id=merchant.id, item_ref=ref, name=ref))

        main.charges.tx(catalogue)
    finally:
        main.store.close()
    keys = [
        [
            create_key(database_url, "secret", MODE, merchant.public_id)
            for _ in range(math.ceil(count / customers_per_key))
        ]
        for merchant, count in zip(merchants, per_merchant, strict=True)
    ]
    # Customers and top-ups, in ``threads`` slices (PostgreSQL commits in parallel).
    slices = [list(range(w, customers, threads)) for w in range(threads)]

    def make(indexes: list[int]) -> list[tuple[int, str]]:
        payments = _open_payments(database_url)
        try:
            return [(i, _funded_customer(payments, merchants[owner[i]])) for i in indexes]
        finally:
            payments.store.close()

    public_ids = [""] * customers
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for made in pool.map(make, slices):
            for index, public_id in made:
                public_ids[index] = public_id
    seen = [0] * MERCHANTS
    out = []
    for i, public_id in enumerate(public_ids):
        m = owner[i]
        key = keys[m][seen[m] // customers_per_key]
        seen[m] += 1
        out.append(BenchCustomer(public_id, key, m == 0))
    return Population(out, MERCHANTS, sum(len(k) for k in keys), items)


def _open_payments(database_url: str) -> Payments:
    store: Any = open_store(database_url)
    return Payments(store, SimulatedProcessor())


def _create_merchant(payments: Payments, index: int) -> Merchant:
    def api_rows(tx: Any, merchant: Merchant) -> None:
        api_tx(tx).insert_api_merchant(merchant.id, MODE, payments.clock())

    # The API's default funding policy: a funded wallet pays first.
    return payments.create_merchant(
        "hot merchant" if index == 0 else f"merchant {index}",
        CURRENCY,
        funding_policy=(FundingSource.wallet, FundingSource.tab, FundingSource.direct),
        also=api_rows,
    )


def _funded_customer(payments: Payments, merchant: Merchant) -> str:
    def also(tx: Any, customer: Customer) -> None:
        api_tx(tx).insert_api_customer(customer.id, merchant.id, payments.clock())

    customer = payments.create_customer(CURRENCY, payment_method_token=PAYMENT_METHOD, also=also)
    receipt = payments.top_up(customer.id, FUNDING_MICROS, f"bench-setup-{customer.public_id}")
    if receipt.status is not TopUpStatus.ok:
        raise ApiBenchError(f"bench setup: a top-up was refused: {receipt.status.value}")
    return customer.public_id
