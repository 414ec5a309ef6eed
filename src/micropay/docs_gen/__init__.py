"""The reference docs, generated from the code: ``micropay docs`` writes them, ``--check`` compares.

Three files in ``docs/``:

- ``openapi.json``: the app's OpenAPI document, exactly what ``GET /openapi.json``
  serves, with sorted keys so it diffs well;
- ``api.md``: a readable reference rendered from that document, with each
  endpoint's key kinds (read from the routes' dependencies) and the error code
  table of :mod:`micropay.api.errors`;
- ``cli.md``: the ``--help`` of every ``micropay`` command, from the click objects.

Nothing here opens a database: the app is built, its description read, and its
runtime closed before any request.
"""

from __future__ import annotations

import json
from pathlib import Path

REFERENCE_FILES = ("openapi.json", "api.md", "cli.md")
REGENERATE = "micropay docs"

__all__ = ["REFERENCE_FILES", "REGENERATE", "check", "render_all", "write"]


def render_all() -> dict[str, str]:
    """Each reference file's name and the text the code gives it now."""
    from micropay.cli.main import main
    from micropay.docs_gen.api_md import render_api
    from micropay.docs_gen.cli_md import render_cli
    from micropay.docs_gen.openapi import api_model

    model = api_model()
    return {
        "openapi.json": json.dumps(model.document, indent=2, sort_keys=True, ensure_ascii=False)
        + "\n",
        "api.md": render_api(model),
        "cli.md": render_cli(main, "micropay"),
    }


def check(directory: Path, rendered: dict[str, str] | None = None) -> list[str]:
    """The reference files in ``directory`` that are missing or differ from the code."""
    rendered = render_all() if rendered is None else rendered
    stale = []
    for name, text in rendered.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write(directory: Path) -> list[str]:
    """Write the reference files that changed into ``directory``; their names."""
    rendered = render_all()
    stale = check(directory, rendered)
    directory.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (directory / name).write_text(rendered[name], encoding="utf-8", newline="\n")
    return stale
