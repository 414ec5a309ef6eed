"""``micropay reconcile`` checks that every revenue-split sale names its purchase or tip.

A sale row is keyed by its purchase's id, or by its tip's id with ``tip_id``
set (a foreign key checks that one). A purchase's sale has no foreign key,
since the key serves both kinds, so reconcile checks it: a clean store passes,
and a sale row naming no purchase (the negative control) fails, named.
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from micropay.cli.main import main
from micropay.core.money import parse_amount
from micropay.payments.models import FundingSource
from micropay.payouts.splits import Share
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.service.payouts import Payouts
from micropay.store import open_store


def _reconcile(url: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["reconcile", "--database-url", url, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_every_sale_names_its_purchase_and_an_orphan_is_named(database_url: str) -> None:
    store: Any = open_store(database_url)
    try:
        payments = Payments(store, SimulatedProcessor())
        payouts = Payouts(payments, attach=True)
        shop = payments.create_merchant("Shop", "USD", funding_policy=(FundingSource.tab,))
        payments.set_item(shop.id, "song", "Song", parse_amount("0.99", "USD"))
        author = payouts.create_payee("Author", "USD", "ba_test_author")
        payouts.set_split(shop.id, "song", [Share(author.id, 10_000)])
        fan = payments.create_customer(
            "USD", processor_customer_token="c", payment_method_token="p"
        )
        receipt = payments.purchase(shop.id, fan.id, "song", "k1")
        assert receipt.ok
        assert payouts.tx(lambda tx: payouts.bind(tx).get_sale(receipt.purchase_id)) is not None
    finally:
        store.close()

    code, report = _reconcile(database_url)
    assert (code, report["ok"], report["sales"]) == (0, True, [])

    # The negative control: a sale whose purchase is not there.
    store = open_store(database_url)
    try:
        with store.write() as tx:
            tx._cur.execute(
                tx._sql(
                    "INSERT INTO sales (purchase_id, merchant_id, currency, gross_micros,"
                    " fee_micros, fee_reversed_micros, refunded_micros, created_at_us)"
                    " VALUES (?,?,?,?,?,?,?,?)"
                ),
                (987_654_321, shop.id, "USD", 1_000, 0, 0, 0, 1),
            )
    finally:
        store.close()
    code, report = _reconcile(database_url)
    assert (code, report["ok"]) == (1, False)
    assert report["sales"] == ["sale 987654321 names no purchase and no tip"]
