"""SQLite keeps account states across batches; any other write must invalidate them.

Each scenario warms the cache with a plain batch (a wallet that overdraws),
lets another writer change the wallet, then sends a second batch down the
plain path. Its statuses must equal the exact engine's on the accounts as
they are then, and the counters must match the journal (reconcile).

Negative controls: with one of the store's checks switched off (another
connection's commits, or this connection's other writes), the same scenario
must give a different, wrong answer, or the scenario has no teeth.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from micropay.core import limits
from micropay.core.accounts import NewAccount
from micropay.core.engine import LedgerView, apply_batch
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import Transfer
from micropay.service.ledger import Ledger
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.store import sqlite as sqlite_store
from micropay.store.sqlite import SqliteStore

WORLD, WALLET, MERCHANT = 1, 2, 3
DMNEC = 1  # debits must not exceed credits
NOW = 1_767_225_600_000_000
TOP_UP = Transfer(500, WORLD, WALLET, 600, "USD", 1)  # what the other writer does

OK, EXCEEDS = TransferStatus.ok, TransferStatus.exceeds_credits

Intervention = Callable[[str, SqliteStore], None]


def _another_connection(url: str, store: SqliteStore) -> None:
    other = open_store(url)
    try:
        assert Ledger(other).submit([TOP_UP])[0].ok
    finally:
        other.close()


_CHILD = """
import sys
from micropay.core.transfers import Transfer
from micropay.service.ledger import Ledger
from micropay.store import open_store

store = open_store(sys.argv[1])
result = Ledger(store).submit([Transfer(500, 1, 2, 600, "USD", 1)])[0]
store.close()
sys.exit(0 if result.ok else 1)
"""


def _another_process(url: str, store: SqliteStore) -> None:
    subprocess.run([sys.executable, "-c", _CHILD, url], check=True, timeout=120)


def _same_connection_exact_path(url: str, store: SqliteStore) -> None:
    assert Ledger(store, netted=False).submit([TOP_UP])[0].ok


def _same_connection_account_change(url: str, store: SqliteStore) -> None:
    # A write outside ``store.write()``: raise the wallet's overdraft limit.
    store.execute_raw("UPDATE accounts SET credit_limit_micros = 600 WHERE id = 2")


def _run(url: str, intervene: Intervention) -> tuple[list[TransferStatus], list[TransferStatus]]:
    """(statuses the ledger gave the second batch, statuses the exact engine gives)."""
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    try:
        ledger = Ledger(store, clock=lambda: NOW)
        opened = ledger.create_accounts(
            [
                NewAccount(WORLD, "USD", "world"),
                NewAccount(WALLET, "USD", "wallet", flags=DMNEC),
                NewAccount(MERCHANT, "USD", "merchant"),
            ]
        )
        assert all(r.status is AccountStatus.ok for r in opened)
        assert ledger.submit([Transfer(1, WORLD, WALLET, 1_000, "USD", 1)])[0].ok
        # 1,000 buys three of five: the guard refuses, the plain path settles
        # (and caches the wallet at 900 spent).
        first = [Transfer(10 + i, WALLET, MERCHANT, 300, "USD", 2) for i in range(5)]
        assert [r.status for r in ledger.submit(first)] == [OK] * 3 + [EXCEEDS] * 2
        assert ledger.stats["plain"] == 1

        intervene(url, store)  # now the wallet can pay 600 more

        second = [Transfer(20 + i, WALLET, MERCHANT, 300, "USD", 2) for i in range(3)]
        with store.read() as reader:
            accounts = reader.get_accounts([WORLD, WALLET, MERCHANT])
        expected = [
            r.status for r in apply_batch(second, LedgerView(accounts, {}, {}, {}), NOW).results
        ]
        got = [r.status for r in ledger.submit(second)]
        assert ledger.stats["plain"] == 2  # the cache-aware path, not the exact one
        return got, expected
    finally:
        store.close()


SCENARIOS = {
    "another_connection": _another_connection,
    "another_process": _another_process,
    "same_connection_exact_path": _same_connection_exact_path,
    "same_connection_raw_sql": _same_connection_account_change,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_another_write_between_batches_gives_exact_statuses(
    name: str, new_database_url: Callable[[str], str]
) -> None:
    url = new_database_url("sqlite")
    got, expected = _run(url, SCENARIOS[name])
    assert expected == [OK, OK, EXCEEDS]  # the scenario really depends on the other write
    assert got == expected
    store = open_store(url)
    try:
        if name != "same_connection_raw_sql":  # that one changes a limit, not counters
            assert reconcile(store).ok
        with store.read() as reader:
            wallet = reader.get_accounts([WALLET])[WALLET]
        assert wallet.debits_posted_micros == 1_500
    finally:
        store.close()


# --- negative controls: each check switched off must let a stale state through


@pytest.mark.parametrize("name", ["another_connection", "another_process"])
def test_without_the_data_version_check_another_connection_goes_unseen(
    name: str, new_database_url: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SqliteStore, "_data_version", lambda self, conn: 0)
    got, expected = _run(new_database_url("sqlite"), SCENARIOS[name])
    assert got != expected
    assert got == [EXCEEDS] * 3  # settled against the stale wallet


@pytest.mark.parametrize("name", ["same_connection_exact_path", "same_connection_raw_sql"])
def test_without_the_change_count_check_other_writes_go_unseen(
    name: str, new_database_url: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_only_cache_aware_writes", lambda expected, made: True)
    got, expected = _run(new_database_url("sqlite"), SCENARIOS[name])
    assert got != expected
    assert got == [EXCEEDS] * 3


# --- the cache's own rules


def _cache(store: Any) -> Any:
    return store._cache


def test_a_rolled_back_transaction_empties_the_cache(
    new_database_url: Callable[[str], str],
) -> None:
    url = new_database_url("sqlite")
    store = open_store(url)
    try:
        _warm(store)
        assert _cache(store).states
        with pytest.raises(RuntimeError, match="gives up"):
            _give_up_in_a_write(store)
        assert not _cache(store).states
        assert _cache(store).stamp is None
    finally:
        store.close()


def _give_up_in_a_write(store: Any) -> None:
    with store.write() as tx:
        assert tx.lock_account_states([WALLET])
        raise RuntimeError("the caller gives up")


def test_the_cache_stays_within_its_limit(
    new_database_url: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "cached_account_states_max", 2)
    store = open_store(new_database_url("sqlite"))
    try:
        _warm(store)
        assert 0 < len(_cache(store).states) <= 2
        # Still exact: a third account read later replaces the cache's content.
        ledger = Ledger(store)
        with store.write() as tx:
            states = tx.lock_account_states([WORLD, WALLET, MERCHANT])
        assert sorted(states) == [WORLD, WALLET, MERCHANT]
        assert len(_cache(store).states) <= 3
        assert ledger.accounts([WALLET])[WALLET].debits_posted_micros == 900
    finally:
        store.close()


def test_the_cache_follows_netted_and_plain_writes(
    new_database_url: Callable[[str], str],
) -> None:
    """After each plain or netted batch, every cached state equals the stored one."""
    store = open_store(new_database_url("sqlite"))
    try:
        ledger = _warm(store)
        _assert_cache_matches_store(store)
        # Plain (the last batch had refusals), all accepted: the next one nets.
        assert ledger.submit([Transfer(30, WORLD, WALLET, 2_000, "USD", 1)])[0].ok
        assert ledger.stats == {"netted": 1, "plain": 2, "exact": 0, "retries": 0}
        _assert_cache_matches_store(store)
        assert ledger.submit([Transfer(31, WALLET, MERCHANT, 100, "USD", 2)])[0].ok
        assert ledger.stats["netted"] == 2
        _assert_cache_matches_store(store, at_least=3)
        # 2,000 left: two of four. The netted attempt is refused and rolled
        # back (the cache empties), the plain path reads and caches again.
        results = ledger.submit(
            [Transfer(40 + i, WALLET, MERCHANT, 700, "USD", 2) for i in range(4)]
        )
        assert [r.status for r in results] == [OK] * 2 + [EXCEEDS] * 2
        assert ledger.stats["plain"] == 3
        _assert_cache_matches_store(store, at_least=2)
    finally:
        store.close()


def _assert_cache_matches_store(store: Any, at_least: int = 2) -> None:
    cached = dict(_cache(store).states)
    assert len(cached) >= at_least
    with store.read() as reader:
        stored = reader.get_accounts(cached.keys())
    for account_id, state in cached.items():
        account = stored[account_id]
        assert state == (
            account.currency,
            account.flags,
            account.credit_limit_micros,
            account.debits_pending_micros,
            account.debits_posted_micros,
            account.credits_pending_micros,
            account.credits_posted_micros,
        )


def _warm(store: Any) -> Ledger:
    """Accounts, a funded wallet, and a plain batch that leaves them cached."""
    ledger = Ledger(store, clock=lambda: NOW)
    ledger.create_accounts(
        [
            NewAccount(WORLD, "USD", "world"),
            NewAccount(WALLET, "USD", "wallet", flags=DMNEC),
            NewAccount(MERCHANT, "USD", "merchant"),
        ]
    )
    assert ledger.submit([Transfer(1, WORLD, WALLET, 1_000, "USD", 1)])[0].ok
    first = [Transfer(10 + i, WALLET, MERCHANT, 300, "USD", 2) for i in range(5)]
    assert [r.status for r in ledger.submit(first)] == [OK] * 3 + [EXCEEDS] * 2
    return ledger


def test_two_connections_taking_turns_stay_exact(new_database_url: Callable[[str], str]) -> None:
    """Seeded rounds: two connections (and an exact-path writer) take turns at random.

    Before each batch an oracle connection reads the accounts; the batch's
    statuses must equal the engine's on them, whichever path it takes.
    """
    import random

    url = new_database_url("sqlite")
    stores = [open_store(url) for _ in range(3)]
    try:
        clock = iter(range(NOW, NOW + 10_000))
        ledgers = [Ledger(s, clock=lambda: next(clock)) for s in stores[:2]]
        ledgers.append(Ledger(stores[0], netted=False, clock=lambda: next(clock)))
        wallets = list(range(10, 16))
        ledgers[0].create_accounts(
            [NewAccount(WORLD, "USD", "world"), NewAccount(MERCHANT, "USD", "merchant")]
            + [NewAccount(w, "USD", "wallet", flags=DMNEC) for w in wallets]
        )
        rng = random.Random(7)
        next_id = 1_000
        oracle = stores[2]
        for _ in range(60):
            batch = []
            for _ in range(rng.randrange(1, 12)):
                wallet = rng.choice(wallets)
                if rng.random() < 0.2:
                    batch.append(Transfer(next_id, WORLD, wallet, rng.randrange(1, 900), "USD", 1))
                else:
                    batch.append(
                        Transfer(next_id, wallet, MERCHANT, rng.randrange(1, 400), "USD", 2)
                    )
                next_id += 1
            with oracle.read() as reader:
                accounts = reader.get_accounts([WORLD, MERCHANT, *wallets])
            expected = apply_batch(batch, LedgerView(accounts, {}, {}, {}), NOW).results
            ledger = rng.choice(ledgers)
            assert [r.status for r in ledger.submit(batch)] == [r.status for r in expected]
        assert sum(ledger.stats["plain"] for ledger in ledgers[:2]) > 10
        assert reconcile(oracle).ok
    finally:
        for s in stores:
            s.close()
