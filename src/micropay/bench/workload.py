"""The ledger workload (``shared/BENCHMARKS.md`` workload 1), generated lazily.

10,000 customer wallets (``DEBITS_MUST_NOT_EXCEED_CREDITS``) funded from one
clearing account, 100 merchant revenue accounts, and a seeded stream of
customer -> merchant transfers: amounts uniform in 1,000..999,000 micros,
customers uniform, ``hot_share`` of transfers to merchant 0 and the rest
uniform over the other merchants. Transfers are produced batch by batch, so a
run of a million transfers never holds them all in memory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from micropay.core.accounts import AccountFlags, NewAccount
from micropay.core.transfers import Transfer

CURRENCY = "USD"
CLEARING_ID = 1
MERCHANT_BASE = 1_000
CUSTOMER_BASE = 100_000
FIRST_TRANSFER_ID = 1_000_000_000  # funding transfers use the ids below it
AMOUNT_MICROS_MIN = 1_000
AMOUNT_MICROS_MAX = 999_000
CODE_FUNDING, CODE_PURCHASE = 1, 2
_WALLET = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)


@dataclass(frozen=True, slots=True)
class Workload:
    transfers: int
    batch: int
    hot_share: float = 0.5
    customers: int = 10_000
    merchants: int = 100
    funding_micros: int = 20_000_000
    seed: int = 1

    def accounts(self) -> list[NewAccount]:
        """The clearing account, the merchants, then the customer wallets."""
        return [
            NewAccount(CLEARING_ID, CURRENCY, "processor_clearing"),
            *(
                NewAccount(MERCHANT_BASE + m, CURRENCY, "merchant_revenue")
                for m in range(self.merchants)
            ),
            *(
                NewAccount(CUSTOMER_BASE + c, CURRENCY, "customer_wallet", flags=_WALLET)
                for c in range(self.customers)
            ),
        ]

    def funding(self) -> list[Transfer]:
        """One top-up per customer from the clearing account (ids 1..customers)."""
        return [
            Transfer(
                c + 1, CLEARING_ID, CUSTOMER_BASE + c, self.funding_micros, CURRENCY, CODE_FUNDING
            )
            for c in range(self.customers)
        ]

    def rows(self) -> Iterator[list[tuple[int, int, int, int]]]:
        """Batches of ``(id, debit_account_id, credit_account_id, amount_micros)``."""
        rng = random.Random(self.seed)
        rand, randrange = rng.random, rng.randrange
        customers, others = self.customers, self.merchants - 1
        hot = self.hot_share if others > 0 else 1.0
        span = AMOUNT_MICROS_MAX - AMOUNT_MICROS_MIN + 1
        next_id = FIRST_TRANSFER_ID
        left = self.transfers
        while left > 0:
            size = min(self.batch, left)
            batch = []
            for transfer_id in range(next_id, next_id + size):
                merchant = 0 if rand() < hot else 1 + randrange(others)
                batch.append(
                    (
                        transfer_id,
                        CUSTOMER_BASE + randrange(customers),
                        MERCHANT_BASE + merchant,
                        AMOUNT_MICROS_MIN + randrange(span),
                    )
                )
            yield batch
            next_id += size
            left -= size

    def batches(self) -> Iterator[list[Transfer]]:
        """The same stream as :meth:`rows`, as transfer requests."""
        for rows in self.rows():
            yield [Transfer(i, d, c, a, CURRENCY, CODE_PURCHASE) for i, d, c, a in rows]
