"""Options shared by CLI commands."""

from __future__ import annotations

import click

DEFAULT_DATABASE_URL = "sqlite:///micropay.db"

database_url_option = click.option(
    "--database-url",
    envvar="MICROPAY_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="sqlite:///path/to/file.db or postgresql://user@host:port/db (env MICROPAY_DATABASE_URL).",
)
