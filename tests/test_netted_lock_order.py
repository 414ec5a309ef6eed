"""The netted update on PostgreSQL locks rows in account-id order without a locking pass.

The order comes from the plan (a nested loop driven by the sorted guards);
this test pins that plan so a change of statement or settings that loses the
order is seen here, not as deadlocks under load.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg

from conftest import require_pg
from micropay.core.accounts import NewAccount
from micropay.core.statuses import AccountStatus
from micropay.core.transfers import Transfer
from micropay.service.ledger import Ledger
from micropay.store import open_store
from micropay.store.postgres import _GUARDED_NETTED_UPDATE, _ORDERED_JOIN
from micropay.store.urls import parse_store_url


def _plan(conn: psycopg.Connection[Any], ids: list[int], *, ordered: bool) -> dict[str, Any]:
    with conn.transaction():
        if ordered:
            conn.execute(_ORDERED_JOIN)
        n = len(ids)
        row = conn.execute(
            "EXPLAIN (FORMAT JSON) " + _GUARDED_NETTED_UPDATE, (ids, ["USD"] * n, [1] * n, [1] * n)
        ).fetchone()
    assert row is not None
    raw = row[0]
    plan: dict[str, Any] = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return plan


def test_netted_update_is_a_nested_loop_driven_by_the_sorted_guards(
    new_database_url: Callable[[str], str],
) -> None:
    require_pg()
    url = new_database_url("postgres")
    store = open_store(url)
    try:
        ledger = Ledger(store)
        accounts = [NewAccount(id=i, currency="USD", kind="test") for i in range(1, 5_001)]
        for start in range(0, len(accounts), 1_000):
            results = ledger.create_accounts(accounts[start : start + 1_000])
            assert {r.status for r in results} == {AccountStatus.ok}
        # A netted batch still applies through the statement under test.
        results = ledger.submit([Transfer(1, 1, 2, 5, "USD", 1), Transfer(2, 3, 2, 7, "USD", 1)])
        assert [r.ok for r in results] == [True, True]
        assert ledger.stats["netted"] == 1
        assert ledger.accounts([2])[2].credits_posted_micros == 12
    finally:
        store.close()
    with psycopg.connect(parse_store_url(url).conninfo, autocommit=True) as conn:
        conn.execute("ANALYZE accounts")
        ids = list(range(2, 5_000, 5))
        ordered = _plan(conn, ids, ordered=True)
        assert ordered["Node Type"] == "ModifyTable"
        join = ordered["Plans"][0]
        assert join["Node Type"] == "Nested Loop"
        outer, inner = join["Plans"]
        assert outer["Node Type"] == "Function Scan"  # the guards, in id order
        assert inner["Node Type"] == "Index Scan"
        assert inner["Index Name"] == "accounts_pkey"
        # Negative control: without the settings the planner hashes the join,
        # which visits accounts in table order, not id order.
        default = _plan(conn, ids, ordered=False)
        assert default["Plans"][0]["Node Type"] != "Nested Loop"
