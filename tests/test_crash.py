"""Crash: a writer killed with SIGKILL at random moments loses and doubles nothing.

Each cycle starts ``crash_writer.py`` (a client with a durable log: ``invoke``
fsynced before submitting, ``ok``/``fail`` after), kills it with SIGKILL at a
seeded random moment, then restarts the client side: it retries every logged
but unacknowledged request with the SAME id and request (whole linked chains),
and verifies against the log and the database:

- lost: acknowledged ``ok`` transfers missing from the ledger (must be 0);
- phantoms: transfers in the ledger that the client never sent (0);
- duplicates: ids present more than once (0); stored transfer differs from its
  logged request (0); an acknowledged failure that took effect (0);
- every request has an outcome after the retry (unknown 0);
- money: merchants' credits equal the sum of the client's effective transfers;
- reconcile clean after every restart.

``MICROPAY_CRASH_CYCLES`` sets the cycles (default 12); each store's run is
bounded to about 60 s.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from micropay.core.accounts import AccountFlags, NewAccount
from micropay.core.statuses import AccountStatus
from micropay.core.transfers import Transfer, TransferFlags
from micropay.service.ledger import Ledger
from micropay.service.ports import LedgerStore
from micropay.service.reconcile import reconcile
from micropay.store import open_store

WRITER = Path(__file__).with_name("crash_writer.py")
CYCLES = int(os.environ.get("MICROPAY_CRASH_CYCLES", "12"))
CYCLES_MIN = 10
RUN_SECONDS_MAX = 60.0
START_TIMEOUT_S = 20.0
KILL_DELAY_S = (0.05, 0.6)
SEED = 20_260_101
SOURCE = 1
MERCHANTS = list(range(11, 16))
CUSTOMERS = list(range(101, 121))
FUNDING_MICROS = 2_000_000
CLIENT_ID_MIN = 1_000_000
RETRY_BATCH_MAX = 500

pytestmark = pytest.mark.slow


@dataclass
class ClientLog:
    """What the client's durable log says: requests in order, and acknowledgements."""

    order: list[int] = field(default_factory=list)
    requests: dict[int, Transfer] = field(default_factory=dict)
    acks: dict[int, str] = field(default_factory=dict)  # id -> "ok" or the failure status


def read_log(path: Path) -> ClientLog:
    """Parse the log, first cutting a torn last line (the writer died mid-write)."""
    if not path.exists():
        return ClientLog()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with path.open("r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
        data = data[:end]
    log = ClientLog()
    for line in data.decode().splitlines():
        kind, id_text, *rest = line.split(" ", 2)
        transfer_id = int(id_text)
        if kind == "invoke":
            assert transfer_id not in log.requests, f"id {transfer_id} invoked twice"
            log.requests[transfer_id] = Transfer(**json.loads(rest[0]))
            log.order.append(transfer_id)
        else:
            outcome = "ok" if kind == "ok" else rest[0]
            assert kind in ("ok", "fail"), line
            previous = log.acks.setdefault(transfer_id, outcome)
            assert previous == outcome, f"id {transfer_id} acknowledged as {previous} and {outcome}"
    return log


def chains(log: ClientLog) -> list[list[Transfer]]:
    """The logged requests grouped into linked chains, in the order they were sent."""
    grouped: list[list[Transfer]] = []
    current: list[Transfer] = []
    for transfer_id in log.order:
        t = log.requests[transfer_id]
        current.append(t)
        if not t.flags & TransferFlags.LINKED:
            grouped.append(current)
            current = []
    assert not current, "the log ends inside a linked chain"
    return grouped


@dataclass
class Figures:
    cycles: int = 0
    invoked: int = 0
    acked: int = 0  # acknowledged by the writer before a kill
    in_doubt: int = 0  # logged but unacknowledged at a kill: retried
    applied_on_retry: int = 0  # in doubt, had not committed: applied now
    replayed_on_retry: int = 0  # in doubt, had committed (or failed): the first result replays
    lost: int = 0
    phantoms: int = 0
    duplicates: int = 0
    mismatched: int = 0
    flipped: int = 0
    unknown: int = 0
    reconcile_failures: int = 0

    def line(self, kind: str) -> str:
        return f"[crash {kind}] " + " ".join(f"{k}={v}" for k, v in vars(self).items())


def recover(ledger: Ledger, path: Path, figures: Figures) -> None:
    """The restarted client: retry every unacknowledged request (whole chains), same id."""
    log = read_log(path)
    retry = [c for c in chains(log) if any(t.id not in log.acks for t in c)]
    # Requests acknowledged by the writer itself (earlier retries were all acknowledged here).
    figures.acked = len(log.acks) - figures.in_doubt
    figures.in_doubt += sum(1 for c in retry for t in c if t.id not in log.acks)
    batch: list[Transfer] = []
    lines: list[str] = []
    for index, chain in enumerate(retry):
        batch.extend(chain)
        if len(batch) < RETRY_BATCH_MAX and index + 1 < len(retry):
            continue
        for t, r in zip(batch, ledger.submit(batch), strict=True):
            outcome = "ok" if r.ok else r.status.value
            if t.id in log.acks:
                assert log.acks[t.id] == outcome, f"{t.id}: acked {log.acks[t.id]}, retry {outcome}"
                continue
            figures.replayed_on_retry += r.replayed
            figures.applied_on_retry += r.ok and not r.replayed
            lines.append(f"ok {t.id}\n" if r.ok else f"fail {t.id} {outcome}\n")
        batch = []
    with path.open("a") as f:
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())


def verify(store: LedgerStore, path: Path, figures: Figures) -> None:
    log = read_log(path)
    invoked = set(log.requests)
    with store.read() as reader:
        effective = [t for t in reader.iter_transfers() if t.id >= CLIENT_ID_MIN]
        recorded = reader.get_recorded(invoked)
        merchants = reader.get_accounts(MERCHANTS)
    ids = [t.id for t in effective]
    figures.invoked = len(invoked)
    figures.unknown = len(invoked - set(log.acks))
    figures.duplicates = len(ids) - len(set(ids))
    figures.phantoms = len(set(ids) - invoked)
    figures.lost = sum(
        1 for i, outcome in log.acks.items() if outcome == "ok" and i not in recorded.transfers
    )
    figures.flipped = sum(
        1
        for i, outcome in log.acks.items()
        if outcome != "ok"
        and (i in recorded.transfers or recorded.rejections[i].status.value != outcome)
    )
    figures.mismatched = sum(
        1 for i, stored in recorded.transfers.items() if not stored.matches(log.requests[i])
    )
    credited = sum(m.credits_posted_micros for m in merchants.values())
    to_merchants = sum(t.amount_micros for t in effective if t.credit_account_id in MERCHANTS)
    assert credited == to_merchants, "merchant credits != the client's transfers to merchants"
    report = reconcile(store)
    figures.reconcile_failures += not report.ok
    assert report.ok, report.violations


def set_up(ledger: Ledger) -> None:
    wallet = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    accounts = [NewAccount(SOURCE, "USD", "processor_clearing")]
    accounts += [NewAccount(m, "USD", "merchant") for m in MERCHANTS]
    accounts += [NewAccount(c, "USD", "wallet", flags=wallet) for c in CUSTOMERS]
    assert all(r.status is AccountStatus.ok for r in ledger.create_accounts(accounts))
    funding = [Transfer(500 + c, SOURCE, c, FUNDING_MICROS, "USD") for c in CUSTOMERS]
    assert all(r.ok for r in ledger.submit(funding))


def wait_started(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else b""
    assert line == b"started\n", f"writer did not start (exit {proc.poll()})"


def test_crash_kill9_loses_and_doubles_nothing(
    store_kind: str,
    new_database_url: Callable[[str], str],
    tmp_path: Path,
    record_property: Callable[..., None],
) -> None:
    url = new_database_url(store_kind)
    log_path = tmp_path / "client.log"
    stderr_path = tmp_path / "writer.stderr"
    rng = random.Random(SEED)
    figures = Figures()
    store = open_store(url)
    ledger = Ledger(store)
    set_up(ledger)
    deadline = time.monotonic() + RUN_SECONDS_MAX
    try:
        for cycle in range(CYCLES):
            if time.monotonic() > deadline:
                break
            log = read_log(log_path)
            # Every third cycle the writer kills itself right after a commit, before
            # logging the acknowledgements: its retries must replay, not apply again.
            self_kill = cycle % 3 == 2
            config: dict[str, object] = {
                "url": url,
                "log": str(log_path),
                "seed": SEED + cycle,
                "first_id": max(log.order, default=CLIENT_ID_MIN - 1) + 1,
                "source": SOURCE,
                "customers": CUSTOMERS,
                "merchants": MERCHANTS,
                "kill_self_after_batches": rng.randint(1, 20) if self_kill else 0,
            }
            with stderr_path.open("wb") as stderr:
                proc = subprocess.Popen(
                    [sys.executable, str(WRITER), json.dumps(config)],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            try:
                wait_started(proc)
                if not self_kill:
                    # The kill moment (not a synchronization): seeded, random.
                    time.sleep(rng.uniform(*KILL_DELAY_S))
                    assert proc.poll() is None, stderr_path.read_text()
                    proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=START_TIMEOUT_S) == -signal.SIGKILL, (
                    stderr_path.read_text()
                )
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
                assert proc.stdout is not None
                proc.stdout.close()
            figures.cycles += 1
            recover(ledger, log_path, figures)
            verify(store, log_path, figures)
            assert (figures.lost, figures.phantoms, figures.duplicates) == (0, 0, 0), figures
            assert (figures.mismatched, figures.flipped, figures.unknown) == (0, 0, 0), figures
    finally:
        store.close()
    print(figures.line(store_kind))
    record_property("crash", figures.line(store_kind))
    assert figures.cycles >= CYCLES_MIN, f"only {figures.cycles} cycles in {RUN_SECONDS_MAX} s"
    assert figures.acked > 0
    # The kills must have caught requests in flight, or the retry path was never tested.
    assert figures.in_doubt > 0, figures
    assert figures.replayed_on_retry > 0, figures
