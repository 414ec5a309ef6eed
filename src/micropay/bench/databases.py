"""Fresh, migrated databases for one benchmark run, removed at the end.

SQLite: a new file in a temporary directory (or the file a ``--database-url``
names, which must not exist yet). PostgreSQL: a new schema in the database the
URL names (default ``test`` at 127.0.0.1:5432), dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg

from micropay.store.migrate import upgrade
from micropay.store.urls import parse_store_url

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


class BenchDatabaseError(RuntimeError):
    """The benchmark cannot get a fresh database."""


@contextmanager
def fresh_database(kind: str, database_url: str | None, label: str) -> Iterator[str]:
    """Yield the URL of a fresh migrated database; remove it on exit."""
    if kind == "sqlite":
        with _fresh_sqlite(database_url, label) as url:
            yield url
    elif kind == "postgres":
        with _fresh_pg_schema(database_url or DEFAULT_PG_URL, label) as url:
            yield url
    else:
        raise ValueError(f"unknown store kind {kind!r}")


@contextmanager
def _fresh_sqlite(database_url: str | None, label: str) -> Iterator[str]:
    if database_url is None:
        directory = Path(tempfile.mkdtemp(prefix="micropay-bench-"))
        try:
            url = f"sqlite:///{directory / f'{label}.db'}"
            upgrade(url)
            yield url
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    parsed = parse_store_url(database_url)
    if parsed.kind != "sqlite":
        raise BenchDatabaseError("--store sqlite needs a sqlite:/// URL")
    path = Path(parsed.path if label == "ledger" else f"{parsed.path}.{label}")
    if path.exists():
        raise BenchDatabaseError(f"{path} exists: the benchmark needs a fresh database file")
    try:
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
    finally:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{path}{suffix}"):
                os.remove(f"{path}{suffix}")


@contextmanager
def _fresh_pg_schema(base_url: str, label: str) -> Iterator[str]:
    parsed = parse_store_url(base_url)
    if parsed.kind != "postgres":
        raise BenchDatabaseError("--store postgres needs a postgresql:// URL")
    schema = f"mp_bench_{label}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(parsed.conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as error:
        raise BenchDatabaseError(f"cannot create a schema on {base_url}: {error}") from None
    try:
        sep = "&" if "?" in parsed.conninfo else "?"
        url = f"{parsed.conninfo}{sep}options={quote(f'-csearch_path={schema}')}"
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(parsed.conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
