"""The music, api and creator months through the real service and store (small sizes).

Structural facts only, never wall-clock: the oracles hold, and each
scenario's own invariant is checked against numbers that could be wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from micropay.cli.simulate_cmd import simulate
from micropay.payouts.plans import Schedule, period_key
from micropay.simulate.creator import (
    CreatorConfig,
    _Creators,
    _expected_payouts,
    books_day_end,
    run_creator,
)
from micropay.simulate.music import MusicConfig, run_music
from micropay.simulate.usage import ApiConfig, run_api

KEYS = {
    "gross_micros",
    "fees_micros",
    "effective_fee",
    "naive_effective_fee",
    "per_item_effective_fee",
    "max_exposure_micros",
    "card_charges",
    "payouts",
    "reconcile_ok",
}
USD = 1_000_000


def _common_facts(result: dict[str, Any]) -> None:
    assert set(result) >= KEYS
    planner, naive = result["planner"], result["naive"]
    assert result["reconcile_ok"] is True, (
        planner["reconcile_violations"],
        naive["reconcile_violations"],
    )
    # The same stream was bought in both stores, and nothing was refused.
    assert planner["gross_micros"] == naive["gross_micros"] == result["gross_micros"] > 0
    assert planner["refused"] == naive["refused"] == {}
    assert 0 < result["effective_fee"] <= result["naive_effective_fee"]


def test_music_split_is_exactly_70_30_per_sale_and_payouts_reconcile(tmp_path: Path) -> None:
    cap = 8 * USD
    cfg = MusicConfig(
        customers=150,
        labels=3,
        artists_per_label=2,
        songs_per_artist=4,
        days=10,
        seed=3,
        songs_per_day=0.6,
        albums_per_day=0.05,
        tab_cap_micros=cap,
        payout_threshold_micros=10 * USD,
    )
    result = run_music(cfg, directory=tmp_path)
    _common_facts(result)
    planner = result["planner"]
    assert 0 < result["max_exposure_micros"] <= cap
    assert planner["songs_sold"] > 0
    assert planner["albums_sold"] > 0
    gross = result["gross_micros"]
    assert gross == planner["songs_sold"] * 990_000 + planner["albums_sold"] * 9_990_000
    # Every sale was split in the ledger, each exactly 70 / 30 of its price.
    assert planner["sales_split"] == planner["purchases"]
    assert planner["sales_split_wrong"] == 0
    assert planner["split_mismatches"] == 0
    assert result["artist_share_micros"] == gross * 7 // 10
    assert result["label_share_micros"] == gross * 3 // 10
    assert result["split_ok"] is True
    # Payees were paid (all verified, threshold 10 USD), once per week at most.
    assert result["payouts"] > 0
    assert planner["duplicate_payouts"] == 0
    assert 0 < result["payouts_micros"] <= gross
    assert planner["micro_deposits"] == 2 * (cfg.labels + cfg.labels * cfg.artists_per_label)
    assert 0 < result["effective_fee"] < result["per_item_effective_fee"]
    assert result["card_charges"] < planner["purchases"]


def test_api_every_call_is_billed_once_from_reloaded_wallets(tmp_path: Path) -> None:
    cfg = ApiConfig(customers=10, days=4, seed=2, bill_every_hours=12)
    result = run_api(cfg, directory=tmp_path)
    _common_facts(result)
    planner, naive = result["planner"], result["naive"]
    # calls x 0.0004 USD is exactly what the postings took, with nothing left unbilled.
    assert result["calls"] * 400 == result["gross_micros"]
    assert planner["billed_exactly"]
    assert naive["billed_exactly"]
    assert result["unbilled_micros"] == 0
    assert result["unpaid_windows"] == 0
    # One posting per client and billing window (every client calls every hour).
    assert result["postings"] == cfg.customers * cfg.days * (24 // cfg.bill_every_hours)
    # Every card charge is a wallet reload; larger planned reloads need fewer of them.
    assert result["card_charges"] == planner["reloads"]
    assert naive["card_charges"] == naive["reloads"]
    assert result["card_charges"] < naive["card_charges"]
    assert naive["effective_fee"] == 0.055  # 10 USD at 5% + 0.05 USD, all attributed
    assert result["per_call_effective_fee"] == 125.0  # 0.05 USD fixed fee on 0.0004 USD
    assert planner["topup_micros_min"] >= cfg.topup_min_micros
    # Calls are served before they are billed: a 10 USD wallet leaves the busiest clients
    # owing for part of a window; reloads sized to their use leave them owing less.
    assert 0 < naive["max_exposure_micros"] <= cfg.calls_max * 400 // 2
    assert result["max_exposure_micros"] < naive["max_exposure_micros"]


def test_api_same_seed_same_month(tmp_path: Path) -> None:
    cfg = ApiConfig(customers=4, days=2, seed=9)
    assert run_api(cfg, directory=tmp_path) == run_api(cfg, directory=tmp_path)


def test_creator_payouts_match_an_independent_tally(tmp_path: Path) -> None:
    cfg = CreatorConfig(
        customers=150,
        creators=12,
        days=16,
        seed=5,
        tips_per_day=0.5,
        payout_threshold_micros=15 * USD,
        share_never_verify=0.25,
        share_verify_late=0.3,
    )
    result = run_creator(cfg, directory=tmp_path)
    _common_facts(result)
    for run in ("planner", "naive"):
        report = result[run]
        assert report["payouts_match"] is True, run
        assert report["payout_mismatches"] == 0
        assert report["payouts"] == report["payouts_expected"] > 0
        assert report["payees_paid"] == report["payees_expected"] > 0
    assert result["unverified_paid"] == 0
    assert result["duplicate_payouts"] == 0
    # The rule bites: some creators earned past the threshold but never verified.
    assert result["creators_never_verified"] > 0
    assert result["unverified_above_threshold"] > 0
    assert result["payees_paid"] <= result["creators_verified"]
    assert 0 < result["payouts_micros"] < result["gross_micros"]


def test_creator_tally_rules_hold_threshold_and_one_payout_a_week() -> None:
    """The tally itself, on hand-made books: hold, threshold, deposits, one per week."""
    cfg = CreatorConfig(creators=2, days=21, payout_threshold_micros=100 * USD)
    day = 86_400_000_000
    books = _Creators(payees=[11, 12])
    books.verified_at_us = {0: books_day_end(0) - 1}  # creator 1 never verifies
    books.deposits_micros = {0: 50_000}
    books.tips[0] = [(books_day_end(0) - 10, 60 * USD), (books_day_end(2) - 10, 50 * USD)]
    books.tips[0] += [(books_day_end(3) - 10, 120 * USD), (books_day_end(4) - 10, 100 * USD)]
    books.tips[1] = [(books_day_end(0) - 10, 500 * USD)]
    expected = _expected_payouts(cfg, books)
    # Day 7: 60 released, below 100. Day 9: 110 - 0.05 deposits. Day 10 (same ISO week,
    # Jan 5-11): 120 is due but waits for the next week: day 11 pays 120 + 100 (day 11).
    week = period_key(Schedule.weekly, books_day_end(9))
    assert period_key(Schedule.weekly, books_day_end(10)) == week
    next_week = period_key(Schedule.weekly, books_day_end(11))
    assert expected == [(11, week, 110 * USD - 50_000), (11, next_week, 220 * USD)]
    assert books_day_end(1) - books_day_end(0) == day


def test_cli_runs_each_scenario_and_prints_json(tmp_path: Path) -> None:
    runner = CliRunner()
    for scenario, args in (
        ("api", ["--customers", "3", "--days", "2"]),
        ("creator", ["--customers", "5", "--days", "1"]),
    ):
        out = runner.invoke(simulate, ["--scenario", scenario, *args, "--json"])
        assert out.exit_code == 0, out.output
        result = json.loads(out.output)
        assert set(result) >= KEYS
        assert result["scenario"] == scenario
        assert result["reconcile_ok"] is True
    text = runner.invoke(simulate, ["--scenario", "api", "--customers", "2", "--days", "1"])
    assert text.exit_code == 0, text.output
    assert "2 API clients" in text.output
    assert "reconcile           ok" in text.output
    bad = runner.invoke(simulate, ["--scenario", "music", "--tab-cap", "0"])
    assert bad.exit_code != 0
    assert "must be positive" in bad.output
    unknown = runner.invoke(simulate, ["--scenario", "podcast"])
    assert unknown.exit_code != 0
