"""The news month through the real service and store: structural facts, never wall-clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from micropay.cli.simulate_cmd import simulate
from micropay.simulate.news import GUARD_KEYS, NewsConfig, run_news

KEYS = {
    "gross_micros",
    "fees_micros",
    "effective_fee",
    "naive_effective_fee",
    "per_item_effective_fee",
    "card_charges",
    "max_exposure_micros",
    "fee_guard_refusals",
    "conversions",
    "lost_sales",
    "lost_sales_micros",
    "payouts",
    "reconcile_ok",
}


def test_small_news_month_reconciles_and_stays_within_the_cap(tmp_path: Path) -> None:
    cfg = NewsConfig(customers=200, publishers=20, days=5, seed=7, tab_cap_micros=3_000_000)
    result = run_news(cfg, directory=tmp_path)
    assert set(result) >= KEYS
    assert result["reconcile_ok"], (
        result["planner"]["reconcile_violations"],
        result["naive"]["reconcile_violations"],
    )
    planner, naive = result["planner"], result["naive"]
    # The same reads were bought in both stores; nothing but the fee guard refused.
    assert planner["gross_micros"] == naive["gross_micros"] == result["gross_micros"] > 0
    assert planner["refused"] == naive["refused"] == {}
    assert result["fee_guard_refusals"] > 0
    assert 0 < result["max_exposure_micros"] <= cfg.tab_cap_micros
    assert naive["max_exposure_micros"] <= 5_000_000
    assert 0 < result["effective_fee"] < result["per_item_effective_fee"]
    assert result["effective_fee"] <= result["naive_effective_fee"]
    assert result["card_charges"] < planner["purchases"]
    assert result["payouts"] == 0


def _guard_counts(run: dict[str, Any]) -> dict[str, int]:
    return {key: run["fee_guard"][key] for key in GUARD_KEYS}


def test_every_pay_per_item_attempt_is_bought_converted_or_lost(tmp_path: Path) -> None:
    cfg = NewsConfig(customers=120, publishers=10, days=4, seed=11, convert_share=0.5)
    result = run_news(cfg, directory=tmp_path)
    assert result["reconcile_ok"]
    planner, naive = result["planner"], result["naive"]
    # The same readers made the same choices in both runs.
    assert _guard_counts(planner) == _guard_counts(naive)
    for run in (planner, naive):
        guard = run["fee_guard"]
        assert guard["attempts"] == (
            guard["direct_purchases"] + guard["converted_purchases"] + guard["lost_sales"]
        )
        # Each refusal either converts its reader (once) or is a lost sale.
        assert guard["refusals"] == guard["conversions"] + guard["lost_sales"]
        assert guard["converted"]["readers"] == guard["conversions"]
        direct = run["by_preference"]["direct"]
        assert guard["converted"]["readers"] + guard["stayed"]["readers"] == direct["readers"]
        assert (
            guard["converted"]["gross_micros"] + guard["stayed"]["gross_micros"]
            == direct["gross_micros"]
        )
        # What the stayers still buy directly passes the guard: at most 15% in fees.
        stayed = guard["stayed"]
        assert stayed["fees_micros"] * 10_000 <= 1_500 * stayed["gross_micros"]
    assert 0 < result["conversions"] < planner["by_preference"]["direct"]["readers"]
    assert result["lost_sales"] > 0
    assert result["lost_sales_micros"] > 0
    # Converted readers pay on the run's own tab: 25.00 carried vs the naive 5.00.
    converted_fee = [run["fee_guard"]["converted"]["effective_fee"] for run in (planner, naive)]
    assert 0 < converted_fee[0] < converted_fee[1]
    assert naive["max_exposure_micros"] <= 5_000_000


def test_conversion_share_extremes_and_a_guard_that_only_warns(tmp_path: Path) -> None:
    base = {"customers": 60, "publishers": 5, "days": 3, "seed": 4}
    nobody = run_news(NewsConfig(**base, convert_share=0.0), directory=tmp_path)
    everyone = run_news(NewsConfig(**base, convert_share=1.0), directory=tmp_path)
    warns = run_news(NewsConfig(**base, fee_guard_refuses=False), directory=tmp_path)
    # The reads are the same whatever the readers answer.
    attempts = nobody["planner"]["fee_guard"]["attempts"]
    assert attempts == everyone["planner"]["fee_guard"]["attempts"] > 0
    assert nobody["conversions"] == 0
    assert nobody["lost_sales"] == nobody["fee_guard_refusals"] > 0
    assert everyone["lost_sales"] == 0
    assert everyone["conversions"] > 0
    assert everyone["gross_micros"] - nobody["gross_micros"] == nobody["lost_sales_micros"]
    # A guard that only warns charges every article directly, whatever its fee.
    assert warns["fee_guard_refusals"] == warns["conversions"] == warns["lost_sales"] == 0
    assert warns["planner"]["fee_guard"]["direct_purchases"] == attempts
    assert warns["gross_micros"] == everyone["gross_micros"]
    for result in (nobody, everyone, warns):
        assert result["reconcile_ok"]


def test_bad_conversion_share_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="convert_share"):
        run_news(NewsConfig(customers=5, convert_share=1.5), directory=tmp_path)


def test_same_seed_same_month(tmp_path: Path) -> None:
    cfg = NewsConfig(customers=40, publishers=5, days=2, seed=3)
    first, second = run_news(cfg, directory=tmp_path), run_news(cfg, directory=tmp_path)
    assert first == second


def test_cli_json(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        simulate, ["--customers", "30", "--days", "2", "--seed", "5", "--json"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert set(result) >= KEYS
    assert result["reconcile_ok"] is True
    bad = CliRunner().invoke(simulate, ["--tab-cap", "-1"])
    assert bad.exit_code != 0
