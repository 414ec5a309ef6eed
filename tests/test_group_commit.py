"""Group commit: 32 concurrent callers share database transactions, results stay their own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from micropay.core.accounts import AccountFlags, NewAccount
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import Transfer, TransferFlags, TransferResult
from micropay.service.group_commit import GroupCommitter, Overloaded
from micropay.service.ledger import BatchTooLarge, Ledger
from micropay.service.reconcile import reconcile
from micropay.store import open_store

S = TransferStatus
THREADS = 32
SUBMISSIONS_PER_THREAD = 20
AFFORDABLE = 15  # each wallet can pay for 15 of its 20 purchases
PRICE_MICROS = 10_000
SOURCE, MERCHANT = 1, 2
BARRIER_TIMEOUT_S = 60.0
BATCH_MAX = 64


@pytest.fixture
def url(store_kind: str, new_database_url: Callable[[str], str]) -> str:
    url = new_database_url(store_kind)
    store = open_store(url)
    try:
        ledger = Ledger(store)
        wallet = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
        accounts = [NewAccount(SOURCE, "USD", "clearing"), NewAccount(MERCHANT, "USD", "merchant")]
        accounts += [NewAccount(10 + k, "USD", "wallet", flags=wallet) for k in range(THREADS)]
        assert all(r.status is AccountStatus.ok for r in ledger.create_accounts(accounts))
        funding = [
            Transfer(100 + k, SOURCE, 10 + k, AFFORDABLE * PRICE_MICROS, "USD")
            for k in range(THREADS)
        ]
        assert all(r.ok for r in ledger.submit(funding))
    finally:
        store.close()
    return url


@pytest.fixture
def committer(url: str) -> Iterator[GroupCommitter]:
    gc = GroupCommitter(lambda: Ledger(open_store(url)), batch_max=BATCH_MAX)
    yield gc
    gc.close()


def test_concurrent_callers_share_commits(
    url: str, committer: GroupCommitter, record_property: Callable[..., None]
) -> None:
    barrier = threading.Barrier(THREADS + 2)
    results: dict[int, list[TransferResult]] = {}
    side: dict[str, list[TransferResult]] = {}
    errors: list[BaseException] = []

    def buyer(k: int) -> None:
        try:
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
            mine = []
            for n in range(SUBMISSIONS_PER_THREAD):
                t = Transfer(10_000 + k * 100 + n, 10 + k, MERCHANT, PRICE_MICROS, "USD")
                mine.extend(committer.transfer([t]))
            results[k] = mine
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)

    def misbehaving_callers() -> None:
        """An open chain and a failing closed chain, mixed into the others' commits."""
        try:
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
            linked = int(TransferFlags.LINKED)
            open_chain = [
                Transfer(90_001, SOURCE, 10, PRICE_MICROS, "USD", flags=linked),
                Transfer(90_002, SOURCE, 11, PRICE_MICROS, "USD", flags=linked),
            ]
            side["open"] = committer.transfer(open_chain)
            failing_chain = [
                Transfer(90_003, SOURCE, 12, PRICE_MICROS, "USD", flags=linked),
                Transfer(90_004, 13, MERCHANT, 10**12, "USD"),  # overdraws: the chain fails
            ]
            side["failing"] = committer.transfer(failing_chain)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=buyer, args=(k,)) for k in range(THREADS)]
    threads.append(threading.Thread(target=misbehaving_callers))
    for thread in threads:
        thread.start()
    barrier.wait(timeout=BARRIER_TIMEOUT_S)
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []

    submissions = THREADS * SUBMISSIONS_PER_THREAD + 1  # the failing chain was queued
    expected = [S.ok] * AFFORDABLE + [S.exceeds_credits] * (SUBMISSIONS_PER_THREAD - AFFORDABLE)
    for k in range(THREADS):
        assert [r.status for r in results[k]] == expected, k
        assert [r.id for r in results[k]] == [10_000 + k * 100 + n for n in range(20)]
        assert not any(r.replayed for r in results[k])
    assert [r.status for r in side["open"]] == [S.linked_event_chain_open] * 2
    assert [r.status for r in side["failing"]] == [S.linked_event_failed, S.exceeds_credits]

    ledger = Ledger(open_store(url))
    try:
        wallets = ledger.accounts([10 + k for k in range(THREADS)])
        for account in wallets.values():
            assert account.debits_posted_micros == AFFORDABLE * PRICE_MICROS
            assert account.credits_posted_micros == AFFORDABLE * PRICE_MICROS
        merchant = ledger.accounts([MERCHANT])[MERCHANT]
        assert merchant.credits_posted_micros == THREADS * AFFORDABLE * PRICE_MICROS
        # Neither misbehaving batch moved money; the open chain was never recorded.
        assert ledger.transfers([90_001, 90_002, 90_003, 90_004]) == {}
        report = reconcile(ledger.store)
    finally:
        ledger.store.close()
    line = (
        f"[group commit] submissions={submissions} commits={committer.commits}"
        f" transfers_per_commit={THREADS * SUBMISSIONS_PER_THREAD / max(committer.commits, 1):.1f}"
    )
    print(line)
    record_property("group_commit", line)
    assert report.ok, report.violations
    assert 0 < committer.commits < submissions, "no commit was shared"


def test_batch_size_limit(url: str, committer: GroupCommitter) -> None:
    at_limit = [Transfer(20_000 + n, SOURCE, 10 + n % THREADS, 1, "USD") for n in range(BATCH_MAX)]
    assert [r.status for r in committer.transfer(at_limit)] == [S.ok] * BATCH_MAX
    past_limit = [
        Transfer(30_000 + n, SOURCE, 10 + n % THREADS, 1, "USD") for n in range(BATCH_MAX + 1)
    ]
    with pytest.raises(BatchTooLarge):
        committer.transfer(past_limit)
    ledger = Ledger(open_store(url))
    try:
        assert ledger.transfers([t.id for t in past_limit]) == {}
        assert len(ledger.transfers([t.id for t in at_limit])) == BATCH_MAX
        assert reconcile(ledger.store).ok
    finally:
        ledger.store.close()


def test_a_full_queue_sheds_load_and_writes_nothing(url: str) -> None:
    committer = GroupCommitter(lambda: Ledger(open_store(url)), queue_max=0)
    try:
        with pytest.raises(Overloaded):
            committer.transfer([Transfer(40_001, SOURCE, 10, 1, "USD")])
    finally:
        committer.close()
    ledger = Ledger(open_store(url))
    try:
        assert ledger.transfers([40_001]) == {}
    finally:
        ledger.store.close()


def test_a_failed_commit_reaches_every_caller_in_it(url: str) -> None:
    def broken_ledger() -> Ledger:
        store = open_store(url)
        store.close()  # every write on it now fails, as a lost connection would
        return Ledger(store)

    committer = GroupCommitter(broken_ledger)
    failures: list[BaseException] = []

    def caller(n: int) -> None:
        try:
            committer.transfer([Transfer(50_000 + n, SOURCE, 10, 1, "USD")])
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        committer.close()
    assert len(failures) == 8
