"""The generated reference (docs/openapi.json, api.md, cli.md) is what the code generates now.

A route, schema, error code or CLI option changed without regenerating fails
here with the command to run. The checks on content read the code a second
way (the app's routes and the click tree), so a generator that dropped an
endpoint or a command would fail even if the committed files matched it.
"""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from micropay import docs_gen
from micropay.api import ApiConfig, create_app
from micropay.api.errors import API_ERRORS, STATUS_HTTP
from micropay.cli.main import main
from micropay.docs_gen.api_md import operations
from micropay.docs_gen.cli_md import command_paths
from micropay.docs_gen.openapi import ALL_KINDS, api_model

DOCS = Path(__file__).resolve().parent.parent / "docs"
HINT = "run `micropay docs` from the repository root and commit the result"


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return docs_gen.render_all()


def _section(text: str, heading: str) -> str:
    """The text of ``heading``'s section, up to the next heading of any level."""
    start = text.index(heading + "\n")
    end = text.find("\n#", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_committed_reference_is_what_the_code_generates(rendered: dict[str, str]) -> None:
    stale = docs_gen.check(DOCS, rendered)
    diff = "".join(
        line
        for name in stale[:1]
        for line in list(
            difflib.unified_diff(
                (DOCS / name).read_text().splitlines(keepends=True),
                rendered[name].splitlines(keepends=True),
                f"docs/{name}",
                "generated",
            )
        )[:60]
    )
    assert stale == [], f"docs/{', docs/'.join(stale)} out of date: {HINT}\n{diff}"


def test_generation_is_deterministic(rendered: dict[str, str]) -> None:
    assert docs_gen.render_all() == rendered


def test_openapi_json_is_the_document_the_app_serves(rendered: dict[str, str]) -> None:
    app = create_app(ApiConfig("sqlite:///:memory:"))
    try:
        served = app.openapi()
    finally:
        app.state.runtime.close()
    assert json.loads(rendered["openapi.json"]) == served
    assert served["paths"], "the app describes no endpoint"


def test_every_operation_is_in_api_md_with_its_auth(rendered: dict[str, str]) -> None:
    document = json.loads(rendered["openapi.json"])
    api_md = rendered["api.md"]
    found = operations(document)
    assert len(found) >= 40
    model = api_model()
    for method, path, op in found:
        section = _section(api_md, f"### `{method} {path}`")
        auth = next(line for line in section.splitlines() if line.startswith("- Auth: "))
        kinds = model.key_kinds.get((method, path), ())
        for kind in ALL_KINDS:
            assert (kind in auth) == (kind in kinds), (method, path, auth)
        if any(p.get("name") == "Idempotency-Key" for p in op.get("parameters", [])):
            assert "- `Idempotency-Key`: required" in section, (method, path)
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        ref = body.get("schema", {}).get("$ref")
        if ref:
            schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
            for field in schema.get("properties", {}):
                assert f"| `{field}` |" in section, (method, path, field)


def test_key_kinds_match_the_route_guards() -> None:
    """Spot checks against what the routes declare: operator, secret, publishable, none."""
    kinds = api_model().key_kinds
    assert kinds[("POST", "/v1/merchants")] == ("operator",)
    assert kinds[("POST", "/v1/purchases")] == ("secret",)
    assert kinds[("GET", "/v1/items/{item_ref}")] == ("secret", "publishable")
    assert ("POST", "/v1/processor-events") not in kinds
    assert ("GET", "/healthz") not in kinds
    document_ops = {(m, p) for m, p, op in operations(api_model().document) if op.get("security")}
    assert document_ops == set(kinds), "an endpoint with a bearer key has no key kinds"


def test_every_error_code_is_in_api_md_under_its_status(rendered: dict[str, str]) -> None:
    api_md = rendered["api.md"]
    expected = {(code, http) for code, http in API_ERRORS.items()}
    expected |= {(str(s.value), http) for s, (http, _) in STATUS_HTTP.items() if http >= 400}
    assert len(expected) > 50
    for code, http in expected:
        start = api_md.index(f'<a id="http-{http}"></a>')
        end = api_md.find('<a id="http-', start + 1)
        assert f"| `{code}` |" in api_md[start:end], (code, http)


def test_every_command_is_in_cli_md(rendered: dict[str, str]) -> None:
    cli_md = rendered["cli.md"]
    paths = command_paths(main, "micropay")
    assert {"micropay", "micropay db upgrade", "micropay docs", "micropay keys create"} <= set(
        paths
    )
    for path in paths:
        section = _section(cli_md, f"## `{path}`")
        assert f"Usage: {path} " in section, path
    docs_help = _section(cli_md, "## `micropay docs`")
    assert "--check" in docs_help
    assert "--out" in docs_help


def test_check_detects_a_modified_copy(tmp_path: Path, rendered: dict[str, str]) -> None:
    for name in docs_gen.REFERENCE_FILES:
        shutil.copy(DOCS / name, tmp_path / name)
    assert docs_gen.check(tmp_path, rendered) == []
    api_md = tmp_path / "api.md"
    api_md.write_text(api_md.read_text().replace("### `POST /v1/purchases`", "### `POST /v1/x`"))
    document = json.loads((tmp_path / "openapi.json").read_text())
    del document["paths"]["/v1/purchases"]
    (tmp_path / "openapi.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (tmp_path / "cli.md").unlink()
    assert docs_gen.check(tmp_path, rendered) == ["openapi.json", "api.md", "cli.md"]


def test_docs_command_writes_then_checks(tmp_path: Path, rendered: dict[str, str]) -> None:
    runner = CliRunner()
    out = tmp_path / "docs"
    result = runner.invoke(main, ["docs", "--check", "--out", str(out)])
    assert result.exit_code == 1
    assert "out of date" in result.output
    assert "micropay docs" in result.output

    result = runner.invoke(main, ["docs", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(docs_gen.REFERENCE_FILES)
    for name in docs_gen.REFERENCE_FILES:
        assert (out / name).read_text() == rendered[name]

    result = runner.invoke(main, ["docs", "--check", "--out", str(out)])
    assert result.exit_code == 0, result.output

    (out / "cli.md").write_text("stale\n")
    result = runner.invoke(main, ["docs", "--check", "--out", str(out)])
    assert result.exit_code == 1
    assert "cli.md" in result.output
    assert "api.md" not in result.output


def test_docs_command_is_registered() -> None:
    assert isinstance(main, click.Group)
    assert main.get_command(click.Context(main), "docs") is not None
