"""Stores refuse unsafe durability settings; migrations are idempotent; transfers are immutable."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from micropay.core.accounts import NewAccount
from micropay.core.transfers import Transfer
from micropay.service.ledger import Ledger
from micropay.service.ports import LedgerStore, StoreError, UnsafeStoreSettings
from micropay.store import open_store
from micropay.store.migrate import current_revision, head_revision, upgrade
from micropay.store.sqlite import SqliteStore
from micropay.store.urls import StoreUrlError, parse_store_url


def test_migrations_are_idempotent_and_at_head(database_url: str) -> None:
    upgrade(database_url)  # a second run changes nothing
    assert current_revision(database_url) == head_revision()


def test_sqlite_refuses_synchronous_below_full(new_database_url: Callable[[str], str]) -> None:
    store = open_store(new_database_url("sqlite"))
    assert isinstance(store, SqliteStore)
    store._conn.execute("PRAGMA synchronous=NORMAL")
    with pytest.raises(UnsafeStoreSettings, match="synchronous"):
        store.check_durability()
    store._conn.execute("PRAGMA synchronous=FULL")
    store.check_durability()  # control: FULL passes
    store.close()


@pytest.mark.postgres
def test_postgres_refuses_synchronous_commit_off(
    new_database_url: Callable[[str], str],
) -> None:
    url = new_database_url("postgres")
    unsafe = url + "%20-csynchronous_commit%3Doff"
    with pytest.raises(UnsafeStoreSettings, match="synchronous_commit"):
        open_store(unsafe)
    open_store(url).close()  # control: the same database with defaults opens


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(StoreUrlError):
        parse_store_url("sqlite:///:memory:")
    with pytest.raises(StoreUrlError):
        parse_store_url("mysql://localhost/x")


@pytest.mark.parametrize(
    "statement", ["UPDATE transfers SET amount_micros = 1", "DELETE FROM transfers"]
)
def test_database_refuses_to_change_transfers(
    ledger: Ledger, store: LedgerStore, statement: str
) -> None:
    ledger.create_accounts([NewAccount(1, "USD", "a"), NewAccount(2, "USD", "b")])
    assert ledger.submit([Transfer(7, 1, 2, 5, "USD")])[0].ok
    with pytest.raises(StoreError, match="immutable"), store.write() as tx:
        tx._cur.execute(statement)  # type: ignore[attr-defined]
    assert ledger.transfers([7])[7].amount_micros == 5
