"""Store adapters (SQLite, PostgreSQL) behind the ledger store port."""

from __future__ import annotations

from micropay.service.ports import LedgerStore
from micropay.store.urls import StoreUrlError, parse_store_url

__all__ = ["StoreUrlError", "open_store"]


def open_store(database_url: str) -> LedgerStore:
    """Open the store a URL names (``sqlite:///file.db`` or ``postgresql://...``)."""
    url = parse_store_url(database_url)
    if url.kind == "sqlite":
        from micropay.store.sqlite import SqliteStore

        return SqliteStore(url.path)
    from micropay.store.postgres import PostgresStore

    return PostgresStore(url.conninfo)
