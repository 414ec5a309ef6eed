"""``micropay bench tabs``: settle N tabs due at period end (the lead registers it in ``bench``)."""

from __future__ import annotations

import json

import click


@click.command("tabs")
@click.option("--tabs", default=100_000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option(
    "--store", type=click.Choice(["sqlite", "postgres"]), default="sqlite", show_default=True
)
@click.option(
    "--database-url",
    default=None,
    help="sqlite: a file that must not exist yet (default: a temp file); "
    "postgres: the server/database to create a fresh schema in "
    "(default postgresql://postgres@127.0.0.1:5432/test).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def tabs(*, tabs: int, store: str, database_url: str | None, as_json: bool) -> None:
    """Settle N tabs due at period end, as the worker does; time it, then reconcile."""
    from micropay.bench.databases import BenchDatabaseError
    from micropay.bench.tabs import TabsOptions, run_tabs_bench
    from micropay.service.ports import StoreError

    options = TabsOptions(
        tabs=tabs, store=store, database_url=database_url, progress=tabs >= 50_000 and not as_json
    )
    try:
        report = run_tabs_bench(options)
    except (StoreError, BenchDatabaseError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(
        "\n".join(
            [
                f"tab settlement on {report['store']}: {report['tabs']:,} tabs due at period end",
                f"  settled   {report['tabs_settled']:,} in {report['seconds']} s"
                f"  ({report['tabs_per_s']} tabs/s); still owing {report['tabs_still_owing']:,}",
                f"  charges   {report['charges_made']:,} at the processor"
                f" ({report['processor_calls']:,} calls)",
                f"  setup     {report['setup_s']} s (not timed)",
                f"  jobs      {', '.join(report['jobs'])}",
                f"  reconcile {'clean' if report['reconcile_ok'] else 'VIOLATIONS'}",
            ]
        )
    )
