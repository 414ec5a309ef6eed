"""Database URLs: ``sqlite:///path/to/file.db`` or ``postgresql://user@host:port/db``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class StoreUrlError(ValueError):
    """The database URL names no store micropay supports."""


@dataclass(frozen=True, slots=True)
class StoreUrl:
    kind: Literal["sqlite", "postgres"]
    path: str = ""  # sqlite: the database file
    conninfo: str = ""  # postgres: a libpq connection string or URL


def parse_store_url(database_url: str) -> StoreUrl:
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        if not path or path.startswith(":memory:"):
            raise StoreUrlError("sqlite needs a file path: an in-memory database cannot be durable")
        return StoreUrl("sqlite", path=path)
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        if database_url.startswith(prefix):
            return StoreUrl(
                "postgres", conninfo="postgresql://" + database_url.removeprefix(prefix)
            )
    raise StoreUrlError("database URL must start with sqlite:/// or postgresql://")
