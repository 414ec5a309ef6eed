"""The news month through the real service and store: structural facts, never wall-clock."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from micropay.cli.simulate_cmd import simulate
from micropay.simulate.news import NewsConfig, run_news

KEYS = {
    "gross_micros",
    "fees_micros",
    "effective_fee",
    "naive_effective_fee",
    "per_item_effective_fee",
    "card_charges",
    "max_exposure_micros",
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
    # The same reads were bought in both stores, and none was refused.
    assert planner["gross_micros"] == naive["gross_micros"] == result["gross_micros"] > 0
    assert planner["refused"] == naive["refused"] == {}
    assert 0 < result["max_exposure_micros"] <= cfg.tab_cap_micros
    assert naive["max_exposure_micros"] <= 5_000_000
    assert 0 < result["effective_fee"] < result["per_item_effective_fee"]
    assert result["effective_fee"] <= result["naive_effective_fee"]
    assert result["card_charges"] < planner["purchases"]
    assert result["payouts"] == 0


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
