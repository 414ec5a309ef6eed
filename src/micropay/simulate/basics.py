"""What every month simulation shares: the clock, the draws, and tab exposure.

Kept apart from the scenarios so that each imports the same pieces (the news
month and the others once carried their own copies).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable

from micropay.payments import chart
from micropay.payments.models import Customer, TabState
from micropay.service.ports import PaymentsStore, PaymentsWriteTx

DAY_S = 86_400
CURRENCY = "USD"
START_US = 1_767_225_600_000_000  # 2026-01-01 00:00 UTC
KINDS = ("tab", "wallet", "direct")


class SimClock:
    """A clock the simulation moves by hand (microseconds)."""

    def __init__(self, start_us: int = START_US) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us


def poisson(rng: random.Random, lam: float) -> int:
    threshold, k, product = math.exp(-lam), 0, rng.random()
    while product > threshold and k < 1_000:
        k += 1
        product *= rng.random()
    return k


def kind_of(index: int, share_tab: float, share_wallet: float) -> str:
    """Customer ``index``'s preference, spread evenly (deterministic shares)."""
    slot = (index * 0.6180339887498949) % 1.0
    if slot < share_tab:
        return "tab"
    if slot < share_tab + share_wallet:
        return "wallet"
    return "direct"


def no_tab(tx: PaymentsWriteTx, customer: Customer) -> None:
    """A pay-per-item customer has no tab: its credit line is 0."""
    tx.set_credit_limit(chart.tab_account(customer.id, customer.currency), 0)
    tx.update_customer_tab(customer.id, 0, TabState.open, customer.tab_opened_at_us)


def max_tab_exposure(store: PaymentsStore, customer_ids: Iterable[int]) -> int:
    """The most any of these customers owed on a tab at any moment, replayed from the ledger."""
    tabs = {chart.tab_account(cid, CURRENCY) for cid in customer_ids}
    owed: dict[int, int] = defaultdict(int)
    worst = 0
    with store.read() as reader:
        for t in reader.iter_transfers():
            if t.debit_account_id in tabs:
                owed[t.debit_account_id] += t.amount_micros
                worst = max(worst, owed[t.debit_account_id])
            if t.credit_account_id in tabs:
                owed[t.credit_account_id] -= t.amount_micros
    return worst
