"""``micropay export csv|beancount``: write the journal (see :mod:`micropay.service.export`)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import click

from micropay.cli.options import database_url_option
from micropay.service.export import ExportSummary, export_beancount, export_csv
from micropay.service.ports import LedgerStore, StoreError
from micropay.store.urls import StoreUrlError

Exporter = Callable[[LedgerStore, TextIO], ExportSummary]

output_option = click.option(
    "--output",
    "-o",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
    help="File to write ('-' for stdout). A file appears only once the export is complete.",
)


@click.group("export")
def export() -> None:
    """Write the journal in another format."""


@export.command("csv")
@database_url_option
@output_option
def export_csv_cmd(database_url: str, output: str) -> None:
    """One CSV row per transfer that took effect (rejections excluded)."""
    _run(database_url, output, export_csv, "transfer(s)")


@export.command("beancount")
@database_url_option
@output_option
def export_beancount_cmd(database_url: str, output: str) -> None:
    """A Beancount ledger of posted movements with a balance assertion per account."""
    _run(database_url, output, export_beancount, "transaction(s)")


def _run(database_url: str, output: str, exporter: Exporter, noun: str) -> None:
    from micropay.store import open_store

    try:
        store = open_store(database_url)
    except (StoreError, StoreUrlError) as error:
        raise click.ClickException(str(error)) from None
    try:
        with _sink(output) as out:
            summary = exporter(store, out)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    finally:
        store.close()
    if output != "-":
        click.echo(f"wrote {summary.transfers} {noun} to {output}", err=True)


@contextlib.contextmanager
def _sink(output: str) -> Iterator[TextIO]:
    """stdout, or a temporary file renamed over ``output`` only when the export succeeds."""
    if output == "-":
        yield sys.stdout
        return
    target = Path(output)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
