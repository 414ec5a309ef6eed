"""``micropay bench ledger`` end to end, with tiny counts: the report is complete and honest.

Speed is measured and reported by the command, never asserted here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import PG_BASE, require_pg
from micropay.bench.workload import Workload
from micropay.cli.main import main

KEYS = {
    "store",
    "transfers",
    "batch",
    "hot_share",
    "transfers_per_s",
    "raw_transfers_per_s",
    "ratio_to_raw",
    "batch_p50_ms",
    "batch_p99_ms",
    "peak_rss_mb",
    "peak_rss_mb_with_reconcile",
    "reconcile_ok",
    "netted_batches",
    "exact_batches",
    "concurrency",
    "commits",
    "accepted",
    "rejected",
}


def run_bench(store_kind: str, *args: str) -> dict[str, Any]:
    extra = ["--database-url", PG_BASE] if store_kind == "postgres" else []
    if store_kind == "postgres":
        require_pg()
    result = CliRunner().invoke(
        main,
        ["bench", "ledger", "--store", store_kind, *extra, "--json", "--accounts", "500", *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert report.keys() >= KEYS
    return report


def test_batched_run_reports_rates_and_reconciles(store_kind: str) -> None:
    report = run_bench(store_kind, "--transfers", "2000", "--batch", "100")
    assert (report["store"], report["transfers"], report["batch"]) == (store_kind, 2000, 100)
    assert report["transfers_per_s"] > 0
    assert report["raw_transfers_per_s"] > 0
    assert report["ratio_to_raw"] == pytest.approx(
        report["transfers_per_s"] / report["raw_transfers_per_s"], rel=0.01
    )
    assert 0 < report["batch_p50_ms"] <= report["batch_p99_ms"]
    assert report["peak_rss_mb"] > 0
    assert report["reconcile_ok"] is True
    # Funded wallets afford these purchases: every batch is netted, none rejected.
    assert (report["netted_batches"], report["exact_batches"]) == (20, 0)
    assert (report["accepted"], report["rejected"]) == (2000, 0)
    assert report["commits"] == 20


def test_overdrawing_wallets_take_the_plain_path_and_still_reconcile(store_kind: str) -> None:
    # 1 USD per wallet cannot pay for ~4 purchases of ~0.5 USD each.
    report = run_bench(
        store_kind, "--transfers", "2000", "--batch", "100", "--funding-micros", "1000000"
    )
    assert report["plain_batches"] > 0
    assert report["rejected"] > 0
    assert report["accepted"] + report["rejected"] == 2000
    assert report["reconcile_ok"] is True


def test_group_commit_run_shares_commits(store_kind: str) -> None:
    report = run_bench(store_kind, "--transfers", "400", "--batch", "1", "--concurrency", "8")
    assert report["concurrency"] == 8
    assert report["transfers_per_s"] > 0
    assert report["raw_transfers_per_s"] > 0
    assert report["raw_batch"] == 1
    assert report["accepted"] == 400
    assert 0 < report["commits"] <= 400
    assert report["reconcile_ok"] is True


def test_concurrency_needs_batch_one() -> None:
    result = CliRunner().invoke(
        main, ["bench", "ledger", "--transfers", "10", "--batch", "10", "--concurrency", "2"]
    )
    assert result.exit_code == 2
    assert "--batch 1" in result.output


def test_an_existing_sqlite_file_is_refused(tmp_path: Any) -> None:
    existing = tmp_path / "taken.db"
    existing.write_bytes(b"")
    result = CliRunner().invoke(
        main,
        ["bench", "ledger", "--transfers", "10", "--database-url", f"sqlite:///{existing}"],
    )
    assert result.exit_code == 1
    assert "fresh database" in result.output
    assert existing.read_bytes() == b""


def test_workload_stream_is_seeded_and_follows_the_hot_share() -> None:
    from micropay.bench.workload import (
        AMOUNT_MICROS_MAX,
        AMOUNT_MICROS_MIN,
        MERCHANT_BASE,
        Workload,
    )

    workload = Workload(transfers=10_000, batch=3_000, hot_share=0.5, seed=5)
    batches = list(workload.batches())
    assert [len(b) for b in batches] == [3000, 3000, 3000, 1000]
    transfers = [t for b in batches for t in b]
    assert [t.id for t in transfers] == list(range(transfers[0].id, transfers[0].id + 10_000))
    assert all(AMOUNT_MICROS_MIN <= t.amount_micros <= AMOUNT_MICROS_MAX for t in transfers)
    hot = sum(1 for t in transfers if t.credit_account_id == MERCHANT_BASE)
    assert 4_700 < hot < 5_300
    assert [t.id for t in next(workload.batches())] == [t.id for t in batches[0]]
    assert next(workload.batches()) == batches[0]  # same seed, same stream
    uniform = [
        t for b in Workload(transfers=5_000, batch=5_000, hot_share=0.0).batches() for t in b
    ]
    assert all(t.credit_account_id != MERCHANT_BASE for t in uniform)


# --- the netted planner's fast path decides exactly as the general one ------------------

_IDS = [1, 2, 3, 1, 2, 3, 0, -1, 2**63 - 2, 2**63 - 1, True, 2.0, "2"]
_AMOUNTS = [1, 5, 999_000, 1, 5, 0, -1, 2**63 - 1, 2**62, True, 1.5]


class _Code(str):
    """A str subclass: equal to a currency code but not exactly a str."""


_ODD_VALUES: dict[str, list[Any]] = {
    "id": _IDS,
    "debit_account_id": _IDS,
    "credit_account_id": _IDS,
    "amount_micros": _AMOUNTS,
    "currency": ["EUR", "", "usd", "ZZZ", _Code("USD"), 1],
    "code": [1, 65_535, 65_536, -1, True, 0.0],
    "flags": [1, 2, 4, 8, 16, 32, -1, True, False, 1.0, 1 << 40],
    "pending_id": [1, False, 0.0, -1],
    "timeout_s": [1, False, 0.0],
    "reference": ["r", "\x00", 0, "x" * 129],
    "metadata": ["m", "\x00", None],
}


def _transfers() -> Any:
    """A plain transfer (valid unless its accounts are equal), maybe with one odd field."""
    from hypothesis import strategies as st

    from micropay.core.transfers import Transfer, TransferFlags

    base = st.builds(
        Transfer,
        id=st.integers(1, 40),
        debit_account_id=st.integers(1, 4),
        credit_account_id=st.integers(3, 7),
        amount_micros=st.integers(1, 10**6),
        currency=st.just("USD"),
        flags=st.sampled_from([0, 0, int(TransferFlags.LINKED), TransferFlags.LINKED]),
    )
    odd = st.sampled_from(sorted(_ODD_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(_ODD_VALUES[name]))
    )
    return st.tuples(base, st.lists(odd, max_size=1)).map(
        lambda pair: dataclasses.replace(pair[0], **dict(pair[1]))
    )


def test_fast_netted_planner_matches_the_general_planner() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from micropay.core import netting
    from micropay.core.statuses import TransferStatus
    from micropay.core.transfers import TransferFlags, TransferResult

    linked = int(TransferFlags.LINKED)

    def reference(batch: list[Any]) -> Any:
        if not batch or batch[-1].flags == linked:
            return None
        return netting._plan_any(batch, 7)

    @settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_transfers(), max_size=3))
    def check(batch: list[Any]) -> None:
        plan = netting.plan_netted(batch, 7)
        assert plan == reference(batch)
        if plan is not None:
            expected = [TransferResult(t.id, TransferStatus.ok) for t in batch]
            assert netting.netted_results(plan) == expected

    check()
    # And the common case is really taken and agrees: plain valid batches net.
    plain = next(Workload(transfers=50, batch=50).batches())
    assert netting.plan_netted(plain, 7) == reference(plain) is not None
