"""Shared fixtures: a fresh, migrated store per test, on SQLite and on PostgreSQL.

PostgreSQL tests use the server at ``MICROPAY_TEST_PG`` (default
127.0.0.1:5432, database ``test``). Each test run creates its own schemas and
drops them at the end. Without a reachable server the PostgreSQL tests are
skipped with a message, except in CI (``CI`` set), where they fail loudly.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from micropay.service.ledger import Ledger
from micropay.service.ports import LedgerStore
from micropay.store import open_store
from micropay.store.migrate import upgrade

PG_BASE = os.environ.get("MICROPAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_pg_available: bool | None = None


def pg_available() -> bool:
    global _pg_available
    if _pg_available is None:
        try:
            with psycopg.connect(PG_BASE, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            _pg_available = True
        except psycopg.Error:
            _pg_available = False
    return _pg_available


def require_pg() -> None:
    if pg_available():
        return
    message = f"PostgreSQL is not reachable at {PG_BASE}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(f"{message}; set MICROPAY_TEST_PG to run these tests")


def pg_url(schema: str) -> str:
    sep = "&" if "?" in PG_BASE else "?"
    return f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"


class PgSchemas:
    """Creates migrated schemas on demand and drops all of them at the end of the run."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self._template: str | None = None

    def new_url(self) -> str:
        require_pg()
        schema = f"mp_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self.created.append(schema)
        url = pg_url(schema)
        upgrade(url)
        return url

    def drop_all(self) -> None:
        if not self.created or not pg_available():
            return
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            for schema in self.created:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[PgSchemas]:
    schemas = PgSchemas()
    yield schemas
    schemas.drop_all()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def new_database_url(
    tmp_path: Path, sqlite_template: Path, pg_schemas: PgSchemas
) -> Callable[[str], str]:
    """Returns a factory: kind ("sqlite" | "postgres") -> URL of a fresh migrated database."""
    counter = iter(range(1_000_000))

    def make(kind: str) -> str:
        if kind == "sqlite":
            path = tmp_path / f"ledger-{next(counter)}.db"
            shutil.copyfile(sqlite_template, path)
            return f"sqlite:///{path}"
        if kind == "postgres":
            return pg_schemas.new_url()
        raise ValueError(kind)

    return make


STORE_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(store_kind: str, new_database_url: Callable[[str], str]) -> str:
    return new_database_url(store_kind)


@pytest.fixture
def store(database_url: str) -> Iterator[LedgerStore]:
    opened = open_store(database_url)
    yield opened
    opened.close()


class FakeClock:
    """A clock the test moves by hand (microseconds since the epoch)."""

    def __init__(self, start_us: int = 1_767_225_600_000_000) -> None:  # 2026-01-01
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += int(seconds * 1_000_000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(store: LedgerStore, clock: FakeClock) -> Ledger:
    return Ledger(store, clock=clock)
