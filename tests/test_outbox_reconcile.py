"""Invariant 9 in ``micropay reconcile``: the outbox matches the committed changes.

Every successful sale made with the outbox attached has its event, and every
event names a change that is there; each side is broken once (negative
controls) and reconcile must fail naming it.
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from micropay.cli.main import main
from micropay.core.money import parse_amount
from micropay.payments.models import FundingSource
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.store import open_store
from micropay.webhooks.outbox import attach as attach_outbox


def _reconcile(url: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["reconcile", "--database-url", url, "--json"])
    return result.exit_code, json.loads(result.stdout)


def _sql(url: str, statement: str, params: tuple[object, ...]) -> None:
    store: Any = open_store(url)
    try:
        with store.write() as tx:
            tx._cur.execute(tx._sql(statement), params)
    finally:
        store.close()


def test_the_outbox_matches_the_sales_and_each_break_is_named(database_url: str) -> None:
    store: Any = open_store(database_url)
    try:
        # A merchant served without webhooks (a library user): not counted.
        bare = Payments(store, SimulatedProcessor())
        other = bare.create_merchant("Other", "USD", funding_policy=(FundingSource.tab,))
        bare.set_item(other.id, "a", "A", parse_amount("0.10", "USD"))
        ann = bare.create_customer("USD", processor_customer_token="c", payment_method_token="p")
        assert bare.purchase(other.id, ann.id, "a", "k0").ok
        served = Payments(store, SimulatedProcessor())
        attach_outbox(served)
        shop = served.create_merchant("Shop", "USD", funding_policy=(FundingSource.tab,))
        served.set_item(shop.id, "b", "B", parse_amount("0.10", "USD"))
        served.set_item(shop.id, "c", "C", parse_amount("0.10", "USD"))
        receipt = served.purchase(shop.id, ann.id, "b", "k1")
        assert receipt.ok
        assert served.purchase(shop.id, ann.id, "c", "k2").ok
    finally:
        store.close()

    code, report = _reconcile(database_url)
    assert (code, report["ok"], report["outbox"]) == (0, True, [])

    _sql(
        database_url,
        "DELETE FROM webhook_events WHERE type = ? AND object_id = ?",
        ("purchase.succeeded", receipt.purchase_id),
    )
    _sql(
        database_url,
        "INSERT INTO webhook_events (id, merchant_id, type, object_id, payload, created_at_us)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        ("evt_phantom", shop.id, "purchase.succeeded", 999_999, "{}", 1),
    )
    code, report = _reconcile(database_url)
    assert code == 1
    assert report["ok"] is False
    assert sorted(report["outbox"]) == sorted(
        [
            "event evt_phantom (purchase.succeeded) names purchases row 999999, which is not there",
            f"purchases row {receipt.purchase_id} has no purchase.succeeded event",
        ]
    )
