"""``micropay simulate``: a month of a reference workload through the real engine and store."""

from __future__ import annotations

import json
from typing import Any

import click

SCENARIOS = ("news", "music", "api", "creator")
WHO = {"news": "readers", "music": "listeners", "api": "API clients", "creator": "fans"}
WHAT = {"news": "purchases", "music": "purchases", "api": "usage postings", "creator": "tips"}


def _usd(micros: int) -> str:
    return f"{micros / 1_000_000:,.2f} USD"


def _run(scenario: str, customers: int | None, days: int, seed: int, cap: int) -> dict[str, Any]:
    common: dict[str, Any] = {"days": days, "seed": seed, "tab_cap_micros": cap}
    if customers is not None:
        common["customers"] = customers
    if scenario == "music":
        from micropay.simulate.music import MusicConfig, run_music

        return run_music(MusicConfig(**common))
    if scenario == "api":
        from micropay.simulate.usage import ApiConfig, run_api

        return run_api(ApiConfig(**common))
    if scenario == "creator":
        from micropay.simulate.creator import CreatorConfig, run_creator

        return run_creator(CreatorConfig(**common))
    from micropay.simulate.news import NewsConfig, run_news

    return run_news(NewsConfig(**common))


def _extra_lines(result: dict[str, Any]) -> list[str]:
    """The scenario's own figures, after the common ones."""
    scenario = result["scenario"]
    if scenario == "news":
        return [
            f"fee guard           {result['fee_guard_refusals']:,} direct charges refused;"
            f" {result['conversions']} readers took the proposed tab,"
            f" {result['lost_sales']:,} sales lost ({_usd(result['lost_sales_micros'])})",
        ]
    if scenario == "music":
        return [
            f"split artist/label  {_usd(result['artist_share_micros'])}"
            f" / {_usd(result['label_share_micros'])}"
            f" ({'exact' if result['split_ok'] else 'WRONG'})",
            f"payees paid         {result['payees_paid']}",
        ]
    if scenario == "api":
        return [
            f"calls               {result['calls']:,} in {result['postings']:,} postings",
            f"wallet reloads      {result['reloads']:,}"
            f" (median reload {_usd(result['topup_micros_median'])})",
            f"per call            {result['per_call_effective_fee']:.0%}",
        ]
    if scenario == "creator":
        return [
            f"payees paid         {result['payees_paid']} (expected {result['payees_expected']})",
            f"creators verified   {result['creators_verified']}"
            f" ({result['creators_never_verified']} never,"
            f" {result['unverified_above_threshold']} of them above the threshold)",
            f"unverified paid     {result['unverified_paid']}",
            f"duplicate payouts   {result['duplicate_payouts']}",
        ]
    return []


@click.command()
@click.option("--scenario", type=click.Choice(SCENARIOS), default="news", show_default=True)
@click.option(
    "--customers",
    default=None,
    type=click.IntRange(1, 1_000_000),
    help="Readers, listeners, API clients or fans"
    " [default: 10,000 / 5,000 / 200 / 2,000 by scenario].",
)
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 366))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--tab-cap",
    "tab_cap",
    default="25.00",
    show_default=True,
    help="Exposure cap: the most a customer may owe on a tab (USD).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def simulate(
    scenario: str, customers: int | None, days: int, seed: int, tab_cap: str, as_json: bool
) -> None:
    """Run a month of SCENARIO under the settlement planner and the naive policy, side by side."""
    from micropay.core.money import parse_amount

    try:
        cap = parse_amount(tab_cap, "USD")
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--tab-cap") from None
    if cap <= 0:
        raise click.BadParameter("must be positive", param_hint="--tab-cap")
    result = _run(scenario, customers, days, seed, cap)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        planner, naive = result["planner"], result["naive"]
        lines = [
            f"scenario {scenario}: {result['customers']} {WHO[scenario]}, {days} days, seed {seed}",
            f"gross volume        {_usd(result['gross_micros'])}"
            f" ({planner['purchases']:,} {WHAT[scenario]})",
            f"card charges        {result['card_charges']} (naive {naive['card_charges']})",
            f"fees paid           {_usd(result['fees_paid_micros'])}",
            f"fees of the month   {_usd(result['fees_micros'])}",
            f"effective fee       {result['effective_fee']:.2%}",
            f"naive policy        {result['naive_effective_fee']:.2%}"
            f" (ratio {result['fee_ratio']:.2f})",
            f"per item            {result['per_item_effective_fee']:.2%}",
            f"max exposure        {_usd(result['max_exposure_micros'])}"
            + (
                " (calls served, not yet paid)"
                if scenario == "api"
                else f" (cap {_usd(result['tab_cap_micros'])})"
            ),
            f"payouts             {result['payouts']}"
            + (f" ({_usd(result['payouts_micros'])})" if result.get("payouts_micros") else ""),
            *_extra_lines(result),
            f"reconcile           {'ok' if result['reconcile_ok'] else 'FAILED'}",
        ]
        click.echo("\n".join(lines))
    if not result["reconcile_ok"]:
        raise SystemExit(1)
