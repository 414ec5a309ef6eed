"""``micropay bench ledger``: the ledger workload against the raw-store baseline.

One run measures, each on its own fresh database with the same schema and
accounts:

- the ledger: ``Ledger.submit`` per batch (or, with ``concurrency > 1``, that
  many threads each submitting single transfers through a
  :class:`~micropay.service.group_commit.GroupCommitter`), then reconcile;
- the raw baseline (:mod:`micropay.bench.raw`): the same rows in the same
  batch sizes (batch 1 when comparing group commit: the raw per-commit rate),
  with plain SQL and no validation.

Batched runs interleave the two, batch by batch, so that both see the same
machine load and their ratio holds on a shared machine. Only the writing is
timed; generating the workload and setting up accounts are not. Speed is
reported, never asserted.
"""

from __future__ import annotations

import gc
import resource
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from micropay.bench.databases import fresh_database
from micropay.bench.raw import open_raw, run_raw
from micropay.bench.workload import AMOUNT_MICROS_MAX, CODE_PURCHASE, CURRENCY, Workload
from micropay.core import limits
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import Transfer
from micropay.service.group_commit import GroupCommitter
from micropay.service.ledger import Ledger
from micropay.service.reconcile import reconcile
from micropay.store import open_store

_OK = TransferStatus.ok


@dataclass(frozen=True, slots=True)
class BenchOptions:
    store: str
    workload: Workload
    database_url: str | None = None
    concurrency: int = 1
    progress: bool = False


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the ledger and the raw baseline; return the report (see the CLI for keys)."""
    try:
        return _run_bench(options)
    finally:
        gc.unfreeze()


def _run_bench(options: BenchOptions) -> dict[str, Any]:
    workload = options.workload
    if options.concurrency > 1 and workload.batch != 1:
        raise ValueError("--concurrency needs --batch 1: each caller submits single transfers")
    report: dict[str, Any] = {
        "store": options.store,
        "transfers": workload.transfers,
        "batch": workload.batch,
        "hot_share": workload.hot_share,
        "accounts": workload.customers,
        "merchants": workload.merchants,
        "funding_micros": workload.funding_micros,
        "concurrency": options.concurrency,
        "seed": workload.seed,
    }
    with (
        fresh_database(options.store, options.database_url, "ledger") as url,
        fresh_database(options.store, options.database_url, "raw") as raw_url,
    ):
        _setup(url, workload, workload.funding_micros)
        # Same account rows; funded so that no row can trip the schema's
        # overdraft CHECK, since the raw writer validates nothing (capped so
        # the clearing account's total stays within 64 bits).
        raw_funding = min(
            workload.funding_micros + workload.transfers * AMOUNT_MICROS_MAX,
            limits.amount_micros_max // (workload.customers + 1),
        )
        _setup(raw_url, workload, raw_funding)
        _settle_garbage_collector()
        if options.concurrency > 1:
            report.update(_run_group_commit(url, workload, options))
            raw_workload = replace(workload, batch=1)  # the raw per-commit rate
            raw_s, raw_latencies = run_raw(raw_url, raw_workload, _progress("raw", options))
        else:
            ledger_report, raw_s, raw_latencies = _run_interleaved(url, raw_url, options)
            report.update(ledger_report)
        # Peak so far: setup, workload generation, ledger and raw writes.
        report["peak_rss_mb"] = _peak_rss_mb()
        store = open_store(url)
        try:
            reconcile_report = reconcile(store)
        finally:
            store.close()
    report["reconcile_ok"] = reconcile_report.ok
    report["reconcile_violations"] = len(reconcile_report.violations)
    report["raw_batch"] = 1 if options.concurrency > 1 else workload.batch
    report["raw_elapsed_s"] = round(raw_s, 3)
    report["raw_transfers_per_s"] = round(workload.transfers / raw_s, 1) if raw_s else 0.0
    report["raw_batch_p50_ms"] = _percentile_ms(raw_latencies, 0.50)
    report["raw_batch_p99_ms"] = _percentile_ms(raw_latencies, 0.99)
    raw_rate = report["raw_transfers_per_s"]
    report["ratio_to_raw"] = round(report["transfers_per_s"] / raw_rate, 3) if raw_rate else 0.0
    # Reconcile's own peak (SQLite sums the journal in memory) is reported apart.
    report["peak_rss_mb_with_reconcile"] = _peak_rss_mb()
    return report


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _settle_garbage_collector() -> None:
    """Collect, then freeze what survives (imports, setup) out of later collections.

    What a long-running server does after start-up (``gc.freeze``): without
    it, each full collection rescans every module object, and that cost lands
    on whichever batch happens to trigger it. Applied to both phases alike.
    """
    gc.collect()
    gc.freeze()


def _setup(url: str, workload: Workload, funding_micros: int) -> None:
    """Open the accounts and fund every customer (not timed)."""
    store = open_store(url)
    try:
        ledger = Ledger(store)
        accounts = workload.accounts()
        step = limits.batch_accounts_max
        for start in range(0, len(accounts), step):
            results = ledger.create_accounts(accounts[start : start + step])
            if any(r.status is not AccountStatus.ok for r in results):
                raise RuntimeError("benchmark setup: an account could not be opened")
        funding = replace(workload, funding_micros=funding_micros).funding()
        step = limits.batch_transfers_max
        for start in range(0, len(funding), step):
            if not all(r.ok for r in ledger.submit(funding[start : start + step])):
                raise RuntimeError("benchmark setup: a wallet could not be funded")
    finally:
        store.close()


def _run_interleaved(
    url: str, raw_url: str, options: BenchOptions
) -> tuple[dict[str, Any], float, array[float]]:
    """Each batch through the ledger and, right after (or before), as raw SQL.

    Interleaving puts both under the same machine load at every moment, so
    their ratio holds on a shared, noisy machine. The order alternates.
    """
    workload = options.workload
    store = open_store(url)
    ledger = Ledger(store)
    raw = open_raw(raw_url)
    latencies, raw_latencies = array("d"), array("d")
    ledger_s = raw_s = 0.0
    accepted = 0
    progress = _progress("ledger + raw", options)
    clock = time.perf_counter
    try:
        for index, rows in enumerate(workload.rows()):
            batch = [Transfer(i, d, c, a, CURRENCY, CODE_PURCHASE) for i, d, c, a in rows]
            if index % 2:
                started = clock()
                raw.write(rows)
                raw_latencies.append(clock() - started)
            started = clock()
            results = ledger.submit(batch)
            latencies.append(clock() - started)
            if not index % 2:
                started = clock()
                raw.write(rows)
                raw_latencies.append(clock() - started)
            accepted += sum(1 for r in results if r.status is _OK)
            progress(len(batch))
    finally:
        raw.close()
        store.close()
    ledger_s, raw_s = sum(latencies), sum(raw_latencies)
    report = {
        "elapsed_s": round(ledger_s, 3),
        "transfers_per_s": round(workload.transfers / ledger_s, 1) if ledger_s else 0.0,
        "batch_p50_ms": _percentile_ms(latencies, 0.50),
        "batch_p99_ms": _percentile_ms(latencies, 0.99),
        "accepted": accepted,
        "rejected": workload.transfers - accepted,
        "netted_batches": ledger.stats["netted"],
        "plain_batches": ledger.stats["plain"],
        "exact_batches": ledger.stats["exact"],
        "retries": ledger.stats["retries"],
        "commits": len(latencies),
    }
    return report, raw_s, raw_latencies


def _run_group_commit(url: str, workload: Workload, options: BenchOptions) -> dict[str, Any]:
    """``concurrency`` threads, each submitting single transfers and waiting for each."""
    ledgers: list[Ledger] = []

    def make_ledger() -> Ledger:
        ledger = Ledger(open_store(url))
        ledgers.append(ledger)
        return ledger

    source: Iterator[list[Transfer]] = workload.batches()
    source_lock = threading.Lock()
    counts_lock = threading.Lock()
    per_thread: list[array[float]] = []
    accepted = [0]
    failures: list[BaseException] = []
    progress = _progress("ledger", options)
    committer = GroupCommitter(make_ledger)

    def caller() -> None:
        latencies = array("d")
        per_thread.append(latencies)
        mine = 0
        try:
            while True:
                with source_lock:
                    batch = next(source, None)
                if batch is None:
                    break
                started = time.perf_counter()
                results = committer.transfer(batch)
                latencies.append(time.perf_counter() - started)
                mine += sum(1 for r in results if r.status is _OK)
                with counts_lock:
                    progress(len(batch))
        except BaseException as error:  # reported after join; never lost
            failures.append(error)
        with counts_lock:
            accepted[0] += mine

    threads = [
        threading.Thread(target=caller, name=f"bench-caller-{i}", daemon=True)
        for i in range(options.concurrency)
    ]
    started = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=limits.group_commit_wait_s_max + workload.transfers)
        total_s = time.perf_counter() - started
    finally:
        committer.close()
    if failures:
        raise RuntimeError(f"{len(failures)} caller(s) failed: {failures[0]!r}") from failures[0]
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("a benchmark caller did not finish")
    latencies = array("d")
    for part in per_thread:
        latencies.extend(part)
    stats = ledgers[0].stats if ledgers else {"netted": 0, "plain": 0, "exact": 0, "retries": 0}
    return {
        "elapsed_s": round(total_s, 3),
        "transfers_per_s": round(workload.transfers / total_s, 1) if total_s else 0.0,
        "batch_p50_ms": _percentile_ms(latencies, 0.50),
        "batch_p99_ms": _percentile_ms(latencies, 0.99),
        "accepted": accepted[0],
        "rejected": workload.transfers - accepted[0],
        "netted_batches": stats["netted"],
        "plain_batches": stats["plain"],
        "exact_batches": stats["exact"],
        "retries": stats["retries"],
        "commits": committer.commits,
    }


def _percentile_ms(latencies: array[float], fraction: float) -> float:
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    index = min(len(ordered) - 1, int(fraction * len(ordered)))
    return round(ordered[index] * 1_000, 3)


def _progress(phase: str, options: BenchOptions) -> Callable[[int], None]:
    """A callback counting transfers done; prints every 10% to stderr when enabled."""
    total = options.workload.transfers
    state = {"done": 0, "next": total // 10}

    def tick(count: int) -> None:
        state["done"] += count
        if options.progress and state["done"] >= state["next"]:
            print(f"  {phase}: {state['done']:,}/{total:,}", file=sys.stderr, flush=True)
            state["next"] += max(1, total // 10)

    return tick
