"""``micropay demo``: build the demo platform, run its month, print the keys, serve the API."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from micropay.store.urls import StoreUrlError, parse_store_url

if TYPE_CHECKING:
    from micropay.demo import DemoResult

DEFAULT_DEMO_URL = "sqlite:///micropay-demo.db"


def _money(micros: int) -> str:
    from micropay.core.money import format_amount

    return f"{format_amount(micros, 'USD')} USD"


def _remove_sqlite_files(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(path + suffix).unlink(missing_ok=True)


def prepare(database_url: str, *, customers: int, seed: int, reset: bool) -> DemoResult:
    """Build the demo on ``database_url`` (or reopen the one built there before)."""
    from micropay.demo import NotADemoError, UnfinishedDemoError, build_demo, reopen_demo, steps
    from micropay.store.migrate import upgrade

    url = parse_store_url(database_url)
    if reset and url.kind != "sqlite":
        raise click.UsageError("--reset recreates SQLite files only; drop the database instead")
    if reset and Path(url.path).exists():
        click.echo(f"removing {url.path} (--reset)")
        _remove_sqlite_files(url.path)
    upgrade(database_url)
    try:
        found = reopen_demo(database_url)
    except UnfinishedDemoError as error:
        if url.kind != "sqlite":
            raise click.ClickException(f"{error}: drop the database and run again") from None
        # Only a demo's own file gets here (its merchants are the demo's): start it anew.
        click.echo(f"{error}: removing {url.path} and building it anew")
        _remove_sqlite_files(url.path)
        upgrade(database_url)
        found = None
    except NotADemoError as error:
        raise click.ClickException(
            f"{error}: pass --reset to recreate it, or another --database-url"
        ) from None
    if found is not None:
        click.echo(
            "reusing the demo built earlier in this database (--reset builds a new one);"
            " new test keys were minted, the old ones still work"
        )
        return found
    click.echo(f"building the demo platform on {database_url} ({customers} customers, one month)")
    with click.progressbar(length=steps(customers), label="customers, then days") as bar:
        result = build_demo(database_url, customers=customers, seed=seed, progress=bar.update)
    _print_month(result)
    return result


def _print_month(result: DemoResult) -> None:
    bought = ", ".join(f"{n} by {k}" for k, n in sorted(result.purchases.items()))
    click.echo(f"month simulated in {result.seconds:.1f}s:")
    click.echo(f"  purchases: {sum(result.purchases.values())} ({bought})")
    click.echo(f"  sales: {_money(result.gross_micros)}; tips: {result.tips}")
    if result.refused:
        click.echo(f"  refused: {dict(result.refused)}")
    charges = ", ".join(f"{n} {k}" for k, n in sorted(result.card_charges.items()))
    click.echo(f"  card charges: {charges}")
    click.echo(f"  tabs settled at month end: {result.tab_settlements_at_month_end}")
    for name, buckets in result.payee_balances.items():
        click.echo(
            f"  payee {name}: {_money(buckets.get('available', 0))} available,"
            f" {_money(buckets.get('pending', 0))} held"
        )


def _print_reconcile(result: DemoResult) -> None:
    report = result.report
    if report is None:
        return
    for check, count in report.counts().items():
        click.echo(f"  {'ok  ' if count == 0 else 'FAIL'} {check}: {count} violation(s)")
    for problem in result.processor_problems:
        click.echo(f"  FAIL processor: {problem}")
    verdict = "clean" if result.reconcile_ok else "VIOLATIONS"
    click.echo(f"reconcile: {report.accounts} accounts checked: {verdict}")


def _print_keys(result: DemoResult) -> None:
    click.echo("test-mode API keys (shown once; `micropay keys list --database-url` lists ids):")
    click.echo(f"  {'operator key:':<34} {result.operator_key}")
    for merchant in result.merchants:
        label = f"secret key of {merchant.name}:"
        click.echo(f"  {label:<34} {merchant.secret_key}  ({merchant.public_id})")
        customers = result.home_customers.get(merchant.id, [])[:3]
        if customers:
            click.echo(f"  {'':<34} its customers include {', '.join(customers)}")


def _print_how_to(result: DemoResult, base: str) -> None:
    merchant = result.merchants[0]
    customer = (result.home_customers.get(merchant.id) or ["cus_..."])[0]
    key, op = shlex.quote(merchant.secret_key), shlex.quote(result.operator_key)
    item = merchant.items[0]
    click.echo(f"open {base}/docs (OpenAPI: {base}/openapi.json); health: {base}/healthz")
    click.echo("try (copy-paste):")
    click.echo(f"  curl -s {base}/v1/customers -H 'Authorization: Bearer '{key}")
    click.echo(
        f"  curl -s -X POST {base}/v1/purchases -H 'Authorization: Bearer '{key}"
        f" -H 'Idempotency-Key: demo-'$RANDOM -H 'Content-Type: application/json'"
        f' -d \'{{"customer": "{customer}", "item": "{item}"}}\''
    )
    click.echo(
        f"  curl -s -X POST {base}/v1/merchants -H 'Authorization: Bearer '{op}"
        f" -H 'Idempotency-Key: demo-'$RANDOM -H 'Content-Type: application/json'"
        """ -d '{"name": "My Shop", "currency": "USD", "mode": "test"}'"""
    )
    click.echo(f"  curl -s {base}/metrics -H 'Authorization: Bearer '{op} | head")


def serve_demo(database_url: str, host: str, port: int) -> None:
    """Serve the API over the demo database until Ctrl-C (uvicorn, like ``micropay serve``)."""
    import uvicorn

    from micropay.api import ApiConfig, create_app
    from micropay.api.observability import configure_logging

    configure_logging()
    # A signing key for this run only: entitlement tokens verify until it stops.
    app = create_app(ApiConfig(database_url, worker_threads=8))
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None, log_level="info")


def run_demo(
    database_url: str,
    *,
    customers: int,
    seed: int,
    serve: bool = True,
    host: str = "127.0.0.1",
    port: int = 8000,
    reset: bool = False,
    purchases: int | None = None,  # the old ledger demo's option; the month sets the count now
) -> DemoResult:
    del purchases
    result = prepare(database_url, customers=customers, seed=seed, reset=reset)
    _print_reconcile(result)
    if not result.reconcile_ok:
        raise click.ClickException("reconcile found violations (listed above)")
    _print_keys(result)
    base = f"http://{host}:{port}"
    if serve:
        _print_how_to(result, base)
        click.echo("serving; stop with Ctrl-C (the demo stays in the database for next time)")
        serve_demo(database_url, host, port)
    else:
        click.echo(
            f"not serving (--no-serve); serve it with: micropay demo --database-url {database_url}"
        )
    return result


@click.command()
@click.option(
    "--database-url",
    default=DEFAULT_DEMO_URL,
    show_default=True,
    help="Where the demo lives: sqlite:///file.db or postgresql://...",
)
@click.option(
    "--customers",
    default=300,
    show_default=True,
    type=click.IntRange(1, 20_000),
    help="Customers on the platform (the month grows with them).",
)
@click.option("--seed", default=7, show_default=True, type=int, help="Seed of the simulated month.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65_535))
@click.option("--no-serve", is_flag=True, help="Build, reconcile and print the keys, then exit.")
@click.option("--reset", is_flag=True, help="Delete the SQLite demo file first and build anew.")
def demo(
    database_url: str, customers: int, seed: int, host: str, port: int, no_serve: bool, reset: bool
) -> None:
    """The demo platform: publishers, a music store, customers, a month of purchases, served.

    Builds it on first run (wallets, tabs and pay-as-you-go, revenue splits,
    month-end tab settlement, reconcile), then serves the API with printed
    test keys and curl commands. A rerun reuses the demo and mints new keys.
    """
    from micropay.service.ports import StoreError

    try:
        run_demo(
            database_url,
            customers=customers,
            seed=seed,
            serve=not no_serve,
            host=host,
            port=port,
            reset=reset,
        )
    except (StoreError, StoreUrlError) as error:
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":  # pragma: no cover
    demo(prog_name="micropay demo")
