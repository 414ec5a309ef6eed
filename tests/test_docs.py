"""The reference docs stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from micropay.core.statuses import TransferStatus

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_status_table_lists_every_status_in_precedence_order() -> None:
    text = (DOCS / "ledger.md").read_text()
    documented = re.findall(r"^\| \d+ \| `([a-z_]+)` \|", text, flags=re.MULTILINE)
    assert documented == [status.value for status in TransferStatus]


def test_readme_first_integration_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (DOCS.parent / "README.md").read_text()
    block = re.search(r"## First integration.*?```python\n(.*?)```", readme, flags=re.DOTALL)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    namespace["ledger"].store.close()  # type: ignore[attr-defined]
    assert capsys.readouterr().out.split() == ["ok", "4.9996"]


def test_readme_selling_an_article_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (DOCS.parent / "README.md").read_text()
    block = re.search(r"### Selling an article.*?```python\n(.*?)```", readme, flags=re.DOTALL)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    namespace["payments"].store.close()  # type: ignore[attr-defined]
    assert capsys.readouterr().out.split() == ["ok", "tab", "True"]
