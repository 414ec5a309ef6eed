"""Crash of PostgreSQL itself: kill -9 of the server under load loses and doubles nothing.

The shared server is never touched: the test runs a private cluster
(``pg_private.py``; fsync, synchronous_commit and full_page_writes on). Each
cycle starts ``WRITERS`` copies of ``crash_writer.py`` (clients with a durable
log: ``invoke`` fsynced before submitting, ``ok``/``fail`` after), each with
its own log and id range, then at a seeded random moment SIGKILLs the
postmaster and all its children at once. The writers die of the lost
connection. The cluster restarts (crash recovery, checked in its log), and
right after recovery, before any retry, the database is checked against the
logs:

- lost: acknowledged ``ok`` transfers missing (must be 0): the durability
  promise itself;
- phantoms: transfers no client sent (0); the only unacknowledged transfers
  present are those the writer had logged as in flight;
- duplicates (0); stored transfer differs from its request (0); an
  acknowledged failure that took effect (0);
- money: merchants' credits equal the sum of the effective transfers;
- reconcile clean.

Then the restarted clients retry every unacknowledged request with the same id
(whole linked chains), and the same checks run again with every request now
having an outcome (unknown 0), before the writers start again.

``MICROPAY_PG_CRASH_CYCLES`` sets the cycles (default 10). Every cycle runs,
however long the machine takes: the figures never depend on its speed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from micropay.service.ledger import Ledger
from micropay.service.ports import LedgerStore
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.store.migrate import upgrade
from pg_private import PrivateCluster, require_private_pg
from test_crash import (
    CLIENT_ID_MIN,
    CUSTOMERS,
    MERCHANTS,
    SOURCE,
    WRITER,
    ClientLog,
    Figures,
    read_log,
    recover,
    set_up,
    wait_started,
)

CYCLES = int(os.environ.get("MICROPAY_PG_CRASH_CYCLES", "10"))  # RELIABILITY.md: 10+ cycles

WRITERS = 2
KILL_DELAY_S = (0.1, 1.0)
WRITER_EXIT_TIMEOUT_S = 20.0
SEED = 20_260_202
ID_SPAN = 100_000_000  # writer w sends ids from CLIENT_ID_MIN + w * ID_SPAN

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@dataclass
class ServerCrashFigures:
    cycles: int = 0
    server_processes_killed: int = 0
    recoveries: int = 0  # restarts that ran crash recovery (from the server's log)
    writers_killed_by_crash: int = 0
    invoked: int = 0
    acked: int = 0  # acknowledged by the writers before a crash
    in_doubt: int = 0  # logged but unacknowledged at a crash: retried
    committed_unacked: int = 0  # in doubt and found committed right after recovery
    applied_on_retry: int = 0
    replayed_on_retry: int = 0
    lost: int = 0
    phantoms: int = 0
    duplicates: int = 0
    mismatched: int = 0
    flipped: int = 0
    unknown: int = 0
    reconcile_failures: int = 0

    def line(self) -> str:
        return "[crash postgres-server] " + " ".join(f"{k}={v}" for k, v in vars(self).items())

    def add_writers(self, per_writer: list[Figures]) -> None:
        self.acked = sum(f.acked for f in per_writer)
        self.in_doubt = sum(f.in_doubt for f in per_writer)
        self.applied_on_retry = sum(f.applied_on_retry for f in per_writer)
        self.replayed_on_retry = sum(f.replayed_on_retry for f in per_writer)


def merged(logs: list[ClientLog]) -> ClientLog:
    all_ = ClientLog()
    for log in logs:
        assert not log.requests.keys() & all_.requests.keys(), "writers' id ranges overlap"
        all_.order += log.order
        all_.requests.update(log.requests)
        all_.acks.update(log.acks)
    return all_


def verify(
    store: LedgerStore, paths: list[Path], figures: ServerCrashFigures, *, retried: bool
) -> None:
    """The database against all the writers' logs (before or after the retry)."""
    logs = [read_log(p) for p in paths]
    log = merged(logs)
    invoked = set(log.requests)
    with store.read() as reader:
        effective = [t for t in reader.iter_transfers() if t.id >= CLIENT_ID_MIN]
        recorded = reader.get_recorded(invoked)
        merchants = reader.get_accounts(MERCHANTS)
    ids = [t.id for t in effective]
    unacked = invoked - set(log.acks)
    figures.invoked = len(invoked)
    figures.unknown = len(unacked) if retried else 0
    if not retried:
        figures.committed_unacked += len(unacked & set(ids))
        for own in logs:  # unacknowledged: only the trailing batch each writer had in flight
            in_flight = own.order[len(own.order) - len(set(own.order) - set(own.acks)) :]
            assert all(i not in own.acks for i in in_flight), f"{in_flight}: acks after a gap"
    figures.duplicates += len(ids) - len(set(ids))
    figures.phantoms += len(set(ids) - invoked)
    figures.lost += sum(
        1 for i, outcome in log.acks.items() if outcome == "ok" and i not in recorded.transfers
    )
    figures.flipped += sum(
        1
        for i, outcome in log.acks.items()
        if outcome != "ok"
        and (i in recorded.transfers or recorded.rejections[i].status.value != outcome)
    )
    figures.mismatched += sum(
        1 for i, stored in recorded.transfers.items() if not stored.matches(log.requests[i])
    )
    assert (figures.lost, figures.phantoms, figures.duplicates) == (0, 0, 0), figures
    assert (figures.mismatched, figures.flipped, figures.unknown) == (0, 0, 0), figures
    credited = sum(m.credits_posted_micros for m in merchants.values())
    to_merchants = sum(t.amount_micros for t in effective if t.credit_account_id in MERCHANTS)
    assert credited == to_merchants, "merchant credits != the clients' transfers to merchants"
    report = reconcile(store)
    figures.reconcile_failures += not report.ok
    assert report.ok, report.violations


def start_writers(
    url: str, paths: list[Path], seed: int, tmp_path: Path
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for w, path in enumerate(paths):
        log = read_log(path)
        config: dict[str, object] = {
            "url": url,
            "log": str(path),
            "seed": seed + w,
            "first_id": max(log.order, default=CLIENT_ID_MIN + w * ID_SPAN - 1) + 1,
            "source": SOURCE,
            "customers": CUSTOMERS,
            "merchants": MERCHANTS,
        }
        with (tmp_path / f"writer-{w}.stderr").open("wb") as stderr:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WRITER), json.dumps(config)],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            )
    return procs


def stop_writers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WRITER_EXIT_TIMEOUT_S)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with require_private_pg() as private:
        private.init()
        yield private


def restart_and_check(
    cluster: PrivateCluster,
    paths: list[Path],
    per_writer: list[Figures],
    figures: ServerCrashFigures,
) -> None:
    """Crash recovery, the checks, the clients' retries, the checks again."""
    recoveries = cluster.recoveries()
    cluster.start()
    assert cluster.recoveries() == recoveries + 1, "the restart ran no crash recovery"
    figures.recoveries += 1
    store = open_store(cluster.url())
    try:
        verify(store, paths, figures, retried=False)
        ledger = Ledger(store)
        for path, writer_figures in zip(paths, per_writer, strict=True):
            recover(ledger, path, writer_figures)
        figures.add_writers(per_writer)
        verify(store, paths, figures, retried=True)
    finally:
        store.close()


def test_crash_kill9_postgres_server_loses_and_doubles_nothing(
    cluster: PrivateCluster, tmp_path: Path, record_property: Callable[..., None]
) -> None:
    url = cluster.url()
    upgrade(url)
    store = open_store(url)
    try:
        set_up(Ledger(store))
    finally:
        store.close()
    paths = [tmp_path / f"client-{w}.log" for w in range(WRITERS)]
    per_writer = [Figures() for _ in paths]
    figures = ServerCrashFigures()
    rng = random.Random(SEED)
    for cycle in range(CYCLES):
        procs = start_writers(url, paths, SEED + cycle * WRITERS, tmp_path)
        try:
            for proc in procs:
                wait_started(proc)
            # The kill moment (not a synchronization): seeded, random.
            time.sleep(rng.uniform(*KILL_DELAY_S))
            for w, proc in enumerate(procs):
                assert proc.poll() is None, (tmp_path / f"writer-{w}.stderr").read_text()
            figures.server_processes_killed += cluster.kill9()
            for w, proc in enumerate(procs):
                # The writer dies of the lost connection (no retry, no acknowledgement).
                code = proc.wait(timeout=WRITER_EXIT_TIMEOUT_S)
                stderr = (tmp_path / f"writer-{w}.stderr").read_text()
                assert code == 1, stderr
                assert "StoreError: postgresql" in stderr, stderr
                figures.writers_killed_by_crash += 1
        finally:
            stop_writers(procs)
        figures.cycles += 1
        restart_and_check(cluster, paths, per_writer, figures)
    print(figures.line())
    record_property("crash", figures.line())
    assert figures.cycles == CYCLES
    assert figures.recoveries == figures.cycles
    assert figures.acked > 0
    # The crashes must have caught requests in flight, or the retry path was never tested.
    assert figures.in_doubt > 0, figures
