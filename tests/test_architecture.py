"""The dependency rule, checked on the source: core is pure, service has no driver.

``micropay.core`` may import only a small allow-list of the standard library
(no I/O, clock, randomness, logging, threads or processes) and nothing of
micropay outside itself. ``micropay.service`` may use the standard library and
core, but no database driver or ORM, and nothing from the adapters (store,
cli, api, web, worker, bench): adapters depend on the service, not the reverse.

The checker reads the files with :mod:`ast`; nothing is imported, so a module
that would do I/O on import cannot hide it. It sees every ``import`` and
``from ... import`` (relative ones resolved, ``TYPE_CHECKING`` blocks
included), ``__import__``/``importlib`` calls, and in core the calls that read
a clock or do I/O through builtins (``open``, ``print``, ``input``,
``datetime.now``...). A negative control feeds it synthetic offenders.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import micropay

PACKAGE_ROOT = Path(micropay.__file__).parent

# The standard library core may use: pure computation only.
CORE_STDLIB_ALLOWED = frozenset(
    {
        "__future__",
        "abc",
        "bisect",
        "collections",
        "dataclasses",
        "datetime",  # date arithmetic; reading the clock is banned below
        "decimal",
        "enum",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "math",
        "numbers",
        "operator",
        "re",
        "string",
        "types",
        "typing",
        "unicodedata",
    }
)
# Calls core may not make, whatever they are called on.
CORE_BANNED_CALLS = frozenset(
    {"now", "utcnow", "today", "time_ns", "monotonic", "perf_counter", "urandom"}
)
CORE_BANNED_BUILTINS = frozenset({"open", "print", "input", "__import__", "exec", "eval"})

DRIVERS = frozenset({"sqlite3", "psycopg", "psycopg2", "sqlalchemy", "alembic", "asyncpg"})
ADAPTERS = frozenset(
    {
        "micropay.store",
        "micropay.cli",
        "micropay.api",
        "micropay.web",
        "micropay.worker",
        "micropay.bench",
    }
)


@dataclass(frozen=True)
class Finding:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.what}"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module ``source`` imports, as absolute dotted names, with line numbers."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from micropay import store`` imports the subpackage micropay.store.
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call):
            name = _call_name(node.func)
            if name in {"__import__", "import_module", "importlib.import_module"} and node.args:
                arg = node.args[0]
                target = arg.value if isinstance(arg, ast.Constant) else "<dynamic>"
                found.append((node.lineno, str(target)))
    return found


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        inner = _call_name(func.value)
        return f"{inner}.{func.attr}" if inner else func.attr
    return ""


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def core_findings(source: str, module: str, is_package: bool = False) -> list[Finding]:
    findings = []
    for line, name in imported_modules(source, module, is_package):
        if _top(name) == "micropay":
            # ``from micropay import x`` is judged by ``micropay.x``, listed too.
            if name != "micropay" and not _within(name, "micropay.core"):
                findings.append(Finding(module, line, f"imports {name} (core imports only core)"))
        elif _top(name) not in CORE_STDLIB_ALLOWED:
            findings.append(Finding(module, line, f"imports {name} (not on core's allow-list)"))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _call_name(node.func)
            last = name.rpartition(".")[2]
            if last in CORE_BANNED_CALLS or name in CORE_BANNED_BUILTINS:
                findings.append(Finding(module, node.lineno, f"calls {name}() (clock or I/O)"))
    return findings


def service_findings(source: str, module: str, is_package: bool = False) -> list[Finding]:
    findings = []
    for line, name in imported_modules(source, module, is_package):
        if _top(name) in DRIVERS:
            findings.append(Finding(module, line, f"imports the driver {name}"))
        elif any(_within(name, adapter) for adapter in ADAPTERS):
            findings.append(Finding(module, line, f"imports the adapter {name}"))
    return findings


def sources(package: str) -> list[tuple[str, str, bool]]:
    directory = PACKAGE_ROOT / package
    files = sorted(directory.rglob("*.py"))
    return [(module_name(f), f.read_text(encoding="utf-8"), f.name == "__init__.py") for f in files]


# --- the rules on the real code --------------------------------------------------


def test_core_is_pure() -> None:
    modules = sources("core")
    names = {name for name, _, _ in modules}
    # The walk must see the core, or the test proves nothing.
    assert {"micropay.core.engine", "micropay.core.money", "micropay.core.limits"} <= names
    findings = [f for name, text, pkg in modules for f in core_findings(text, name, pkg)]
    assert findings == [], "\n".join(map(str, findings))


def test_service_uses_no_driver_and_no_adapter() -> None:
    modules = sources("service")
    assert "micropay.service.ledger" in {name for name, _, _ in modules}
    findings = [f for name, text, pkg in modules for f in service_findings(text, name, pkg)]
    assert findings == [], "\n".join(map(str, findings))


# --- negative controls: the checker has teeth ------------------------------------------

CORE_OFFENDERS = [
    "import sqlite3",
    "import os.path",
    "import time",
    "import random",
    "import logging",
    "import threading",
    "import secrets",
    "import socket",
    "from psycopg import sql",
    "from micropay.service import ledger",
    "from micropay import store",
    "from ..service import ledger",
    "from .. import cli",
    "from datetime import datetime\nstamp = datetime.now()",
    "import datetime\nday = datetime.date.today()",
    "with open('x') as f:\n    pass",
    "print('hello')",
    "mod = __import__('os')",
    "import importlib\nmod = importlib.import_module('sqlite3')",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sqlite3",
]


@pytest.mark.parametrize("source", CORE_OFFENDERS)
def test_core_checker_flags(source: str) -> None:
    assert core_findings(source, "micropay.core.synthetic") != []


@pytest.mark.parametrize(
    "source",
    [
        "from __future__ import annotations\nimport enum\nfrom decimal import Decimal",
        "from collections.abc import Mapping\nfrom micropay.core import limits",
        "from . import limits\nfrom .money import check_micros",
        "from datetime import date\nend = date(2026, 1, 31)",
    ],
)
def test_core_checker_allows_pure_code(source: str) -> None:
    assert core_findings(source, "micropay.core.synthetic") == []


@pytest.mark.parametrize(
    "source",
    [
        "import sqlite3",
        "import psycopg",
        "from sqlalchemy import text",
        "from alembic import command",
        "from micropay.store.sqlite import SqliteStore",
        "from micropay import store",
        "from ..store import sql",
        "from micropay.cli.main import main",
    ],
)
def test_service_checker_flags(source: str) -> None:
    assert service_findings(source, "micropay.service.synthetic") != []


def test_service_checker_allows_core_and_stdlib() -> None:
    source = "import time\nimport random\nfrom micropay.core.engine import apply_batch\n"
    assert service_findings(source, "micropay.service.synthetic") == []


def test_relative_imports_resolve_from_a_package_init() -> None:
    found = imported_modules("from . import engine", "micropay.core", is_package=True)
    assert (1, "micropay.core.engine") in found
