"""Key administration without HTTP (the CLI and tests): create, list and revoke API keys."""

from __future__ import annotations

import time
from typing import Any, cast

from micropay.api import keys as api_keys
from micropay.api.runtime import api_tx
from micropay.service.ports import PaymentsStore
from micropay.service.retry import run_with_retries
from micropay.store import open_store
from micropay.store.api_sql import ApiKeyRow


class KeyAdminError(ValueError):
    """The key cannot be created or revoked as asked; nothing was written."""


def _now_us() -> int:
    return time.time_ns() // 1_000


def _write(database_url: str, operation: Any) -> Any:
    store = cast(PaymentsStore, open_store(database_url))
    try:

        def once() -> Any:
            with store.write() as tx:
                return operation(tx)

        return run_with_retries(once)
    finally:
        store.close()


def create_key(database_url: str, kind: str, mode: str, merchant: str | None = None) -> str:
    """A new key's token (shown once). ``merchant`` is a merchant public id unless operator.

    A merchant without a mode yet takes the key's mode; a key whose mode differs
    from its merchant's is refused (test and live data stay apart).
    """
    new = api_keys.generate(kind, mode)
    if (kind == "operator") != (merchant is None):
        raise KeyAdminError("operator keys have no merchant; merchant keys need one")

    def create(tx: Any) -> None:
        merchant_id = None
        if merchant is not None:
            found = tx.find_merchant(merchant)
            if found is None:
                raise KeyAdminError(f"unknown merchant {merchant}")
            merchant_id = found.id
            sql = api_tx(tx)
            current = sql.api_merchant_mode(merchant_id)
            if current is None:
                sql.insert_api_merchant(merchant_id, mode, _now_us())
            elif current != mode:
                raise KeyAdminError(f"merchant {merchant} is in {current} mode")
        row = ApiKeyRow(
            new.parsed.lookup, new.secret_sha256, kind, mode, merchant_id, _now_us(), None
        )
        api_tx(tx).insert_api_key(row)

    _write(database_url, create)
    return new.token


def revoke_key(database_url: str, lookup: str) -> bool:
    return bool(_write(database_url, lambda tx: api_tx(tx).revoke_api_key(lookup, _now_us())))


def list_keys(database_url: str, merchant: str | None) -> list[ApiKeyRow]:
    def read(tx: Any) -> list[ApiKeyRow]:
        merchant_id = None
        if merchant is not None:
            found = tx.find_merchant(merchant)
            if found is None:
                raise KeyAdminError(f"unknown merchant {merchant}")
            merchant_id = found.id
        return api_tx(tx).list_api_keys(merchant_id)

    return cast(list[ApiKeyRow], _write(database_url, read))
