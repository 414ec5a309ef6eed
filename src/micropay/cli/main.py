"""The ``micropay`` command."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from micropay.cli.api_cmd import keys, serve
from micropay.cli.bench_cmd import bench
from micropay.cli.demo import demo
from micropay.cli.docs_cmd import docs
from micropay.cli.export_cmd import export
from micropay.cli.options import database_url_option
from micropay.cli.simulate_cmd import simulate
from micropay.cli.worker_cmd import worker
from micropay.service.ports import StoreError
from micropay.store.urls import StoreUrlError

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="micropay")
def main() -> None:
    """micropay: a self-hosted micropayment engine on an exact double-entry ledger."""


@main.group()
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
@database_url_option
def db_upgrade(database_url: str) -> None:
    """Apply all migrations (safe to run again)."""
    from micropay.store.migrate import current_revision, upgrade

    _guard(lambda: upgrade(database_url))
    click.echo(f"database at revision {current_revision(database_url)}")


@main.command()
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def reconcile(database_url: str, as_json: bool) -> None:
    """Prove the ledger's invariants; exit 1 listing each violation."""
    from micropay.service.reconcile import reconcile as run
    from micropay.store import open_store

    store = _guard(lambda: open_store(database_url))
    try:
        report = _guard(lambda: run(store))
        outbox = _guard(lambda: _outbox_problems(store))
        sales = _guard(lambda: _sale_problems(store))
    finally:
        store.close()
    ok = report.ok and not outbox and not sales
    if as_json:
        click.echo(
            json.dumps({**report.to_json(), "ok": ok, "outbox": outbox, "sales": sales}, indent=2)
        )
    else:
        for check, count in report.counts().items():
            click.echo(f"{'ok  ' if count == 0 else 'FAIL'} {check}: {count} violation(s)")
        for violation in report.violations:
            click.echo(f"  - {violation.check}: {violation.detail}")
        label = "FAIL" if outbox else "ok  "
        click.echo(f"{label} outbox_matches_changes: {len(outbox)} violation(s)")
        for problem in outbox:
            click.echo(f"  - outbox_matches_changes: {problem}")
        click.echo(
            f"{'FAIL' if sales else 'ok  '} sales_name_their_sale: {len(sales)} violation(s)"
        )
        for problem in sales:
            click.echo(f"  - sales_name_their_sale: {problem}")
        click.echo(f"{report.accounts} accounts checked: {'clean' if ok else 'VIOLATIONS'}")
    sys.exit(0 if ok else 1)


def _outbox_problems(store: Any, limit: int = 100) -> list[str]:
    """Invariant 9: the webhook outbox matches the committed changes (see WebhooksSql)."""
    with store.read() as reader:
        return list(reader.outbox_problems(limit))


def _sale_problems(store: Any, limit: int = 100) -> list[str]:
    """Every revenue-split sale names its purchase or its tip (see PayoutsSql)."""
    with store.read() as reader:
        return list(reader.sale_problems(limit))


def _guard(operation: Callable[[], T]) -> T:
    """Run ``operation``; turn infrastructure errors into a clear message and exit 2."""
    try:
        return operation()
    except (StoreError, StoreUrlError) as error:
        raise click.ClickException(str(error)) from None


main.add_command(demo)
main.add_command(export)
main.add_command(bench)
main.add_command(serve)
main.add_command(keys)
main.add_command(worker)
main.add_command(simulate)
main.add_command(docs)


def _same_settings_everywhere(command: click.Command) -> None:
    """Give every command the group's help options and width, however it is invoked.

    Click computes a command's help option once, from the first context it
    meets: a command invoked on its own (a test, an embedding program) would
    otherwise keep ``--help`` without ``-h`` for the rest of the process.
    """
    for name, value in (main.context_settings or {}).items():
        command.context_settings.setdefault(name, value)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _same_settings_everywhere(sub)


_same_settings_everywhere(main)

if __name__ == "__main__":  # pragma: no cover
    main()
