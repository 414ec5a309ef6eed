"""``micropay bench api`` end to end, tiny: a real server, real generators, an honest report.

Speed is measured and reported by the command, never asserted here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from conftest import PG_BASE, require_pg
from micropay.bench.api_setup import MERCHANTS, merchant_of
from micropay.cli.main import main

KEYS = {
    "store",
    "customers",
    "connections",
    "duration_s",
    "purchases_per_s",
    "healthz_per_s",
    "ratio_to_ceiling",
    "half_load_rate",
    "p50_ms",
    "p99_ms",
    "errors",
    "reconcile_ok",
    "purchases_2xx",
    "server_purchases",
    "setup_s",
    "cpu",
    "hot_share",
}


def run_bench(store_kind: str, *args: str) -> dict[str, Any]:
    extra = ["--database-url", PG_BASE] if store_kind == "postgres" else []
    if store_kind == "postgres":
        require_pg()
    result = CliRunner().invoke(
        main,
        ["bench", "api", "--store", store_kind, *extra, "--json", *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert report.keys() >= KEYS
    return report


def test_tiny_run_reports_rates_latency_and_reconciles(store_kind: str) -> None:
    report = run_bench(
        store_kind, "--customers", "40", "--duration", "1", "--warmup", "0.3", "--connections", "8"
    )
    assert (report["store"], report["customers"], report["connections"]) == (store_kind, 40, 8)
    assert report["errors"] == {}
    # Every purchase was a new one (201), none met an entitlement still held (200).
    for phase in ("warmup", "purchases", "half_load"):
        assert set(report["statuses"][phase]) == {"201"}, report["statuses"]
    assert set(report["statuses"]["healthz"]) == {"200"}
    assert report["server_purchases"] == report["purchases_2xx"] > 0
    assert report["ledger_reconcile_ok"] is True
    assert report["reconcile_ok"] is True
    assert report["purchases_per_s"] > 0
    assert report["healthz_per_s"] > 0
    assert report["ratio_to_ceiling"] == round(
        report["purchases_per_s"] / report["healthz_per_s"], 3
    )
    assert report["half_load_rate"] == round(report["purchases_per_s"] / 2, 1)
    assert report["half_load_achieved_per_s"] > 0
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["merchants"] == MERCHANTS
    assert report["api_keys"] >= 2
    # Half of the customers, drawn uniformly, belong to the hot merchant.
    assert 0.3 <= report["hot_share"] <= 0.7


def test_two_generator_processes_share_the_work() -> None:
    report = run_bench(
        "sqlite",
        "--customers",
        "20",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--connections",
        "4",
        "--generators",
        "2",
    )
    assert report["generators"] == 2
    assert report["errors"] == {}
    assert "warmup" not in report["statuses"]
    assert report["server_purchases"] == report["purchases_2xx"] > 0
    assert report["reconcile_ok"] is True


def test_half_of_the_customers_belong_to_the_hot_merchant() -> None:
    owners = Counter(merchant_of(i, 10_000) for i in range(10_000))
    assert owners[0] == 5_000
    others = [owners[m] for m in range(1, MERCHANTS)]
    assert len(others) == MERCHANTS - 1
    assert sum(others) == 5_000
    assert min(others) >= 50
    assert max(others) <= 51


def test_a_sqlite_url_for_postgres_is_refused_clearly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(
        main, ["bench", "api", "--store", "postgres", "--database-url", url, "--customers", "4"]
    )
    assert result.exit_code == 1
    assert "needs a postgresql:// URL" in result.output
    assert list(tmp_path.iterdir()) == []
