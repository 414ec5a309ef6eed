"""``micropay bench tabs`` with tiny counts: every due tab is settled once and the books balance.

The command is invoked directly (``micropay.cli.bench_tabs_cmd.tabs``; the lead
registers it under ``micropay bench``). Speed is reported, never asserted.
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from conftest import PG_BASE, require_pg
from micropay.bench.tabs import PRICE_MICROS, TabsOptions, run_tabs_bench
from micropay.cli.bench_tabs_cmd import tabs


def run_tabs(store_kind: str, *args: str) -> dict[str, Any]:
    extra = ["--database-url", PG_BASE] if store_kind == "postgres" else []
    if store_kind == "postgres":
        require_pg()
    result = CliRunner().invoke(
        tabs, ["--store", store_kind, *extra, "--json", *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_every_due_tab_is_settled_once_and_reconciles(store_kind: str) -> None:
    report = run_tabs(store_kind, "--tabs", "120")
    assert (report["store"], report["tabs"]) == (store_kind, 120)
    assert report["tabs_settled"] == 120
    assert report["tabs_still_owing"] == 0
    assert report["charges_made"] == 120  # one charge per tab, none twice
    assert report["processor_calls"] == 120
    assert report["charged_micros"] == 120 * PRICE_MICROS
    assert report["jobs"] == ["close_tab_periods:done", "run_due_charges:done"]
    assert report["seconds"] > 0
    assert report["tabs_per_s"] > 0
    assert report["reconcile_ok"] is True
    assert report["violations"] == []


def test_the_human_summary_names_the_figures() -> None:
    result = CliRunner().invoke(tabs, ["--tabs", "30"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "tab settlement on sqlite: 30 tabs due at period end" in result.output
    assert "settled   30 in" in result.output
    assert "reconcile clean" in result.output


def test_more_tabs_than_one_setup_batch() -> None:
    report = run_tabs_bench(TabsOptions(tabs=1_001))
    assert (report["tabs_settled"], report["charges_made"]) == (1_001, 1_001)
    assert report["reconcile_ok"]


def test_bad_counts_are_refused() -> None:
    result = CliRunner().invoke(tabs, ["--tabs", "0"])
    assert result.exit_code == 2
    assert "--tabs" in result.output
    result = CliRunner().invoke(tabs, ["--store", "oracle"])
    assert result.exit_code == 2
