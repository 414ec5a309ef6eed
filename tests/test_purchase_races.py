"""Concurrent purchases never double-spend across the wallet and the tab."""

from __future__ import annotations

import threading

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


def test_purchases_racing_on_wallet_and_tab(store, database_url, clock) -> None:  # type: ignore[no-untyped-def]
    """The wallet affords 20 purchases and the tab 4 more (1.00 USD): exactly 24 of 48 succeed.

    The customer has no saved card, so a full tab cannot be settled and no
    direct charge is possible: every other purchase must be refused cleanly.
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
        # Remove the card after funding: no tab settlement, no direct charge.
        setup.charges.tx(
            lambda tx, c=buyer.id: tx._cur.execute(  # type: ignore[attr-defined,misc]
                tx._sql("UPDATE customers SET payment_method_token = '' WHERE id = ?"), (c,)
            )
        )
        results: list[PurchaseStatus] = []
        funding: list[FundingSource | None] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        barrier = threading.Barrier(THREADS)

        def buy(worker: int, shop_id: int = shop.id, buyer_id: int = buyer.id) -> None:
            own = Payments(open_store(database_url), processor, clock=clock)
            try:
                barrier.wait(timeout=30)
                for k in range(PER_THREAD):
                    n = worker * PER_THREAD + k
                    receipt = own.purchase(shop_id, buyer_id, f"item-{n}", f"key-{n}")
                    with lock:
                        results.append(receipt.status)
                        funding.append(receipt.funding)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
            finally:
                own.store.close()

        threads = [threading.Thread(target=buy, args=(w,)) for w in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        assert results.count(PurchaseStatus.ok) == 24, results
        assert funding.count(FundingSource.wallet) == 20
        assert funding.count(FundingSource.tab) == 4
        assert set(results) == {PurchaseStatus.ok, PurchaseStatus.insufficient_funds}
        wallet = setup.ledger.accounts([chart.wallet_account(buyer.id, "USD")])
        tab = setup.ledger.accounts([chart.tab_account(buyer.id, "USD")])
        assert available_micros(next(iter(wallet.values()))) == 0
        assert available_micros(next(iter(tab.values()))) == 0
    report = reconcile(store)
    assert report.ok, report.violations
    assert reconcile_processor(store, processor.succeeded_charges()) == []
