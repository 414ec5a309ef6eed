"""``micropay simulate``: a month of a reference workload through the real engine and store."""

from __future__ import annotations

import json

import click


def _usd(micros: int) -> str:
    return f"{micros / 1_000_000:,.2f} USD"


@click.command()
@click.option("--scenario", type=click.Choice(["news"]), default="news", show_default=True)
@click.option("--customers", default=10_000, show_default=True, type=click.IntRange(1, 1_000_000))
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
    scenario: str, customers: int, days: int, seed: int, tab_cap: str, as_json: bool
) -> None:
    """Run a month of SCENARIO under the settlement planner and the naive policy, side by side."""
    from micropay.core.money import parse_amount
    from micropay.simulate.news import NewsConfig, run_news

    try:
        cap = parse_amount(tab_cap, "USD")
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--tab-cap") from None
    if cap <= 0:
        raise click.BadParameter("must be positive", param_hint="--tab-cap")
    result = run_news(NewsConfig(customers=customers, days=days, seed=seed, tab_cap_micros=cap))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        planner, naive = result["planner"], result["naive"]
        lines = [
            f"scenario {scenario}: {customers} readers, {days} days, seed {seed}",
            f"gross volume        {_usd(result['gross_micros'])}"
            f" ({planner['purchases']} purchases)",
            f"card charges        {result['card_charges']} (naive {naive['card_charges']})",
            f"fees paid           {_usd(result['fees_paid_micros'])}",
            f"fees of the month   {_usd(result['fees_micros'])}",
            f"effective fee       {result['effective_fee']:.2%}",
            f"naive policy        {result['naive_effective_fee']:.2%}"
            f" (ratio {result['fee_ratio']:.2f})",
            f"per item            {result['per_item_effective_fee']:.2%}",
            f"max exposure        {_usd(result['max_exposure_micros'])}"
            f" (cap {_usd(result['tab_cap_micros'])})",
            f"payouts             {result['payouts']}",
            f"reconcile           {'ok' if result['reconcile_ok'] else 'FAILED'}",
        ]
        click.echo("\n".join(lines))
    if not result["reconcile_ok"]:
        raise SystemExit(1)
