"""Concurrent purchases never double-spend across the wallet and the tab."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from micropay.core.accounts import available_micros
from micropay.payments import chart
from micropay.payments.models import FundingSource, PurchaseStatus
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.store import open_store

THREADS = 8
PER_THREAD = 6
PRICE = 250_000  # 0.25 USD
ROUNDS = 3


@dataclass
class Round:
    database_url: str
    processor: SimulatedProcessor
    clock: object
    shop_id: int
    buyer_id: int
    barrier: threading.Barrier = field(default_factory=lambda: threading.Barrier(THREADS))
    lock: threading.Lock = field(default_factory=threading.Lock)
    results: list[PurchaseStatus] = field(default_factory=list)
    funding: list[FundingSource | None] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def buy(self, worker: int) -> None:
        own = Payments(open_store(self.database_url), self.processor, clock=self.clock)  # type: ignore[arg-type]
        try:
            self.barrier.wait(timeout=30)
            for k in range(PER_THREAD):
                n = worker * PER_THREAD + k
                receipt = own.purchase(self.shop_id, self.buyer_id, f"item-{n}", f"key-{n}")
                with self.lock:
                    self.results.append(receipt.status)
                    self.funding.append(receipt.funding)
        except BaseException as error:
            self.errors.append(error)
        finally:
            own.store.close()


def test_purchases_racing_on_wallet_and_tab(store, database_url, clock) -> None:  # type: ignore[no-untyped-def]
    """The wallet affords 20 purchases and the tab 4 more (1.00 USD): exactly 24 of 48 succeed.

    The customer's card is removed after funding, so a full tab cannot be
    settled and no direct charge is possible: every other purchase must be
    refused cleanly.
    """
    processor = SimulatedProcessor()
    setup = Payments(store, processor, clock=clock)
    for round_no in range(ROUNDS):
        shop = setup.create_merchant(
            f"Shop {round_no}", "USD", funding_policy=(FundingSource.wallet, FundingSource.tab)
        )
        buyer = setup.create_customer(
            "USD", processor_customer_token="cus_x", payment_method_token="pm_x"
        )
        for n in range(THREADS * PER_THREAD):
            setup.set_item(shop.id, f"item-{n}", "Item", PRICE)
        assert setup.top_up(buyer.id, 5_000_000, f"fund-{round_no}").status.value == "ok"
        setup.charges.tx(
            lambda tx, c=buyer.id: tx._cur.execute(  # type: ignore[attr-defined,misc]
                tx._sql("UPDATE customers SET payment_method_token = '' WHERE id = ?"), (c,)
            )
        )
        race = Round(database_url, processor, clock, shop.id, buyer.id)
        threads = [threading.Thread(target=race.buy, args=(w,)) for w in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert race.errors == []
        assert race.results.count(PurchaseStatus.ok) == 24, race.results
        assert race.funding.count(FundingSource.wallet) == 20
        assert race.funding.count(FundingSource.tab) == 4
        assert set(race.results) == {PurchaseStatus.ok, PurchaseStatus.insufficient_funds}
        wallet_id = chart.wallet_account(buyer.id, "USD")
        tab_id = chart.tab_account(buyer.id, "USD")
        accounts = setup.ledger.accounts([wallet_id, tab_id])
        assert available_micros(accounts[wallet_id]) == 0
        assert available_micros(accounts[tab_id]) == 0
    report = reconcile(store)
    assert report.ok, report.violations
    assert reconcile_processor(store, processor.succeeded_charges()) == []
