"""Database migrations: one Alembic history for SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from micropay.store.urls import StoreUrl, parse_store_url

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def _engine(url: StoreUrl) -> sa.Engine:
    if url.kind == "sqlite":
        return sa.create_engine(f"sqlite:///{url.path}", poolclass=sa.pool.NullPool)
    conninfo = url.conninfo
    return sa.create_engine(
        "postgresql+psycopg://",
        poolclass=sa.pool.NullPool,
        creator=lambda: psycopg.connect(conninfo),
    )


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (idempotent)."""
    url = parse_store_url(database_url)
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            config = _config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or ``None`` for an empty database."""
    url = parse_store_url(database_url)
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the migration history must have one head, has {heads}")
    return heads[0]
