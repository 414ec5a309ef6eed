"""``micropay docs``: write the reference docs generated from the code, or check them."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("docs")
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 listing the files that differ from what the code generates.",
)
@click.option(
    "--out",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default="docs",
    show_default=True,
    help="Directory of the reference files (run from the repository's root).",
)
def docs(check: bool, directory: Path) -> None:
    """Generate the API and CLI reference from the code: openapi.json, api.md and cli.md."""
    from micropay import docs_gen

    if check:
        stale = docs_gen.check(directory)
        for name in stale:
            click.echo(f"out of date: {directory / name}", err=True)
        if stale:
            click.echo(f"regenerate them with `{docs_gen.REGENERATE}`", err=True)
            sys.exit(1)
        click.echo(f"reference docs in {directory} are up to date")
        return
    written = docs_gen.write(directory)
    for name in docs_gen.REFERENCE_FILES:
        click.echo(f"{'wrote    ' if name in written else 'unchanged'} {directory / name}")
