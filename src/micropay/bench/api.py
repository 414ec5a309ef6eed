"""``micropay bench api``: the API workload (``shared/BENCHMARKS.md`` section 2).

One run, on a fresh database (a SQLite file in a temporary directory, or a new
PostgreSQL schema dropped at the end):

1. setup, timed apart (:mod:`micropay.bench.api_setup`): 100 merchants, their
   API keys, 10,000 customers each with a wallet funded by a 20 USD top-up,
   and 0.10 USD articles;
2. ``micropay serve`` started as users run it (its own process, default
   worker threads) on a free port of 127.0.0.1;
3. the load generator (:mod:`micropay.bench.api_load`) in separate processes,
   HTTP/1.1 keep-alive over ``--connections`` connections in all, runs: a
   short warm-up; purchases in a closed loop (the maximum sustained rate);
   ``GET /healthz`` in a closed loop with the same generator (the framework's
   own ceiling: ``ratio_to_ceiling`` = purchases/s / healthz/s); purchases in
   an open loop at half the maximum rate, latency measured from each
   request's scheduled send time;
4. the server stops; reconcile runs on the store, and the purchases the
   server recorded are counted against the 2xx answers the generator got.

Why this population. The API scopes customers to merchants: a customer
belongs to the merchant whose key created it, and ``POST /v1/purchases``
refuses (404) a customer of another merchant (``own_customer`` in
``api/routes.py``). So the ledger workload's "customers uniform, half of the
purchases to merchant 0" cannot draw the customer and the merchant
independently. Instead the hot merchant owns half of the 10,000 customers and
merchants 1..99 share the other half round-robin; each request draws its
customer uniformly from all 10,000 and buys from that customer's merchant.
Customers are then uniform, half of the purchases go to the hot merchant and
the rest are uniform over the other 99, as in the ledger workload, and every
purchase is one the API accepts.

Why several keys a merchant. The server limits each API key to 100 requests/s
(burst 200, in memory). One key for the hot merchant would cap the whole run
near 200 purchases/s and measure the limiter, not the server. A busy merchant
runs many app servers, each with its own key, so each merchant gets one key
per group of ``customers / 200`` of its customers (249 keys for 10,000
customers: 100 for the hot merchant); each key then carries at most 0.5% of
the traffic, far below its limit up to 20,000 purchases/s. A 429 would still
be counted in ``errors``.

Purchases are wallet-funded: the merchants keep the API's default funding
policy (wallet, tab, direct) and every wallet holds enough, so the wallet pays.
A customer buys its merchant's articles in turn (each grants access for one
second), so no purchase meets an entitlement the customer still holds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from micropay.bench.api_load import Phase, PhaseResult, generator_main
from micropay.bench.api_setup import ApiBenchError, Population, set_up
from micropay.bench.databases import fresh_database
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.store.urls import parse_store_url

HOST = "127.0.0.1"
# ``micropay serve`` exactly as the console script runs it, with this interpreter.
SERVER_ENTRY = "import sys; from micropay.cli.main import main; sys.exit(main())"
_SERVER_START_S = 60.0
__all__ = ["ApiBenchError", "ApiBenchOptions", "run_api_bench"]


@dataclass(frozen=True, slots=True)
class ApiBenchOptions:
    store: str
    database_url: str | None = None
    customers: int = 10_000
    duration_s: float = 10.0
    connections: int = 64
    generators: int = 1
    warmup_s: float = 2.0


def run_api_bench(options: ApiBenchOptions) -> dict[str, Any]:
    """Run the API workload; return the report (see ``micropay bench api --help``)."""
    report: dict[str, Any] = {
        "store": options.store,
        "customers": options.customers,
        "connections": options.connections,
        "generators": options.generators,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
    }
    with (
        fresh_database(options.store, options.database_url, "api") as url,
        tempfile.TemporaryDirectory(prefix="micropay-bench-api-") as workdir,
    ):
        started = time.perf_counter()
        population = set_up(url, options.customers, threads=1 if options.store == "sqlite" else 4)
        report["setup_s"] = round(time.perf_counter() - started, 2)
        report["merchants"] = population.merchants
        report["api_keys"] = population.keys
        with (
            _server(url, Path(workdir)) as (port, server_pid),
            _generators(port, population, options) as generators,
        ):
            report["generators"] = len(generators)
            phases = _run_phases(generators, server_pid, options)
        report.update(_figures(phases, options.duration_s))
        report.update(_check_store(url, phases))
    return report


def _run_phases(
    generators: list[Connection], server_pid: int, options: ApiBenchOptions
) -> dict[str, tuple[PhaseResult, float | None]]:
    phases: dict[str, tuple[PhaseResult, float | None]] = {}
    if options.warmup_s > 0:
        phases["warmup"] = _phase(generators, server_pid, Phase("purchase", options.warmup_s))
    phases["purchases"] = _phase(generators, server_pid, Phase("purchase", options.duration_s))
    phases["healthz"] = _phase(generators, server_pid, Phase("healthz", options.duration_s))
    half_rate = _rate(phases["purchases"][0], options.duration_s) / 2
    per_generator = max(half_rate, 1.0) / len(generators)
    phases["half_load"] = _phase(
        generators, server_pid, Phase("purchase", options.duration_s, per_generator)
    )
    return phases


def _phase(
    generators: list[Connection], server_pid: int, phase: Phase
) -> tuple[PhaseResult, float | None]:
    """Run ``phase`` on every generator at once: (merged result, server CPU seconds)."""
    cpu0 = _process_cpu_s(server_pid)
    for pipe in generators:
        pipe.send(phase)
    merged = PhaseResult()
    for pipe in generators:
        try:
            part: PhaseResult = pipe.recv()
        except EOFError:
            raise ApiBenchError("a load generator process died") from None
        merged.in_window += part.in_window
        merged.statuses.update(part.statuses)
        merged.latencies_s.extend(part.latencies_s)
        merged.sent += part.sent
        merged.hot += part.hot
        merged.cpu_s += part.cpu_s
        merged.wall_s = max(merged.wall_s, part.wall_s)
    cpu1 = _process_cpu_s(server_pid)
    return merged, (cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None)


def _rate(result: PhaseResult, duration_s: float) -> float:
    return result.in_window / duration_s if duration_s > 0 else 0.0


def _figures(
    phases: dict[str, tuple[PhaseResult, float | None]], duration_s: float
) -> dict[str, Any]:
    purchases, healthz, half = (phases[k][0] for k in ("purchases", "healthz", "half_load"))
    purchase_rate = _rate(purchases, duration_s)
    healthz_rate = _rate(healthz, duration_s)
    out: dict[str, Any] = {
        "purchases_per_s": round(purchase_rate, 1),
        "healthz_per_s": round(healthz_rate, 1),
        "ratio_to_ceiling": round(purchase_rate / healthz_rate, 3) if healthz_rate else 0.0,
        "half_load_rate": round(purchase_rate / 2, 1),
        "half_load_achieved_per_s": round(_rate(half, duration_s), 1),
        "p50_ms": _percentile_ms(half.latencies_s, 0.50),
        "p99_ms": _percentile_ms(half.latencies_s, 0.99),
        "closed_loop_p50_ms": _percentile_ms(purchases.latencies_s, 0.50),
        "closed_loop_p99_ms": _percentile_ms(purchases.latencies_s, 0.99),
    }
    sent = sum(r.sent for name, (r, _) in phases.items() if name != "healthz")
    hot = sum(r.hot for name, (r, _) in phases.items() if name != "healthz")
    out["hot_share"] = round(hot / sent, 3) if sent else 0.0
    errors: Counter[str] = Counter()
    for result, _ in phases.values():
        errors.update({k: v for k, v in result.statuses.items() if not k.startswith("2")})
    out["errors"] = dict(sorted(errors.items()))
    out["statuses"] = {name: dict(sorted(r.statuses.items())) for name, (r, _) in phases.items()}
    # CPU seconds each side spent in each phase: shows which side was the bottleneck.
    out["cpu"] = {
        name: {
            "wall_s": round(r.wall_s, 2),
            "server_cpu_s": None if server_s is None else round(server_s, 2),
            "generators_cpu_s": round(r.cpu_s, 2),
        }
        for name, (r, server_s) in phases.items()
    }
    return out


def _check_store(url: str, phases: dict[str, tuple[PhaseResult, float | None]]) -> dict[str, Any]:
    """Reconcile the ledger; count the purchases the server recorded against the 2xx answers."""
    answered = sum(
        count
        for name, (result, _) in phases.items()
        if name != "healthz"
        for status, count in result.statuses.items()
        if status.startswith("2")
    )
    server = _count_purchases(url)
    store: Any = open_store(url)
    try:
        ledger = reconcile(store)
    finally:
        store.close()
    return {
        "purchases_2xx": answered,
        "server_purchases": server,
        "ledger_reconcile_ok": ledger.ok,
        "reconcile_ok": ledger.ok and server == answered,
    }


def _count_purchases(url: str) -> int:
    parsed = parse_store_url(url)
    query = "SELECT COUNT(*) FROM purchases"
    if parsed.kind == "sqlite":
        import sqlite3

        with contextlib.closing(sqlite3.connect(parsed.path)) as conn:
            return int(conn.execute(query).fetchone()[0])
    import psycopg

    with psycopg.connect(parsed.conninfo) as pg:
        row = pg.execute(query).fetchone()
        return int(row[0]) if row else 0


def _percentile_ms(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _server(url: str, workdir: Path) -> Iterator[tuple[int, int]]:
    """``micropay serve`` on a free loopback port: (port, pid); stopped on exit."""
    port = _free_port()
    command = [
        sys.executable,
        "-c",
        SERVER_ENTRY,
        "serve",
        "--database-url",
        url,
        "--host",
        HOST,
        "--port",
        str(port),
        "--signing-key-file",
        str(workdir / "signing-key.pem"),
    ]
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(process, f"http://{HOST}:{port}", log_path)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + _SERVER_START_S
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ApiBenchError(f"micropay serve exited ({process.returncode}):\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/readyz").status_code == 200:
                    return
            time.sleep(0.1)
    raise ApiBenchError(f"micropay serve did not answer /readyz within {_SERVER_START_S:.0f} s")


@contextlib.contextmanager
def _generators(
    port: int, population: Population, options: ApiBenchOptions
) -> Iterator[list[Connection]]:
    """``options.generators`` generator processes, each with a slice of customers and links."""
    count = max(1, min(options.generators, options.connections, len(population.customers)))
    context = get_context("spawn")
    pipes: list[Connection] = []
    processes = []
    try:
        for g in range(count):
            ours, theirs = context.Pipe()
            connections = options.connections // count + (g < options.connections % count)
            process = context.Process(
                target=generator_main,
                args=(
                    theirs,
                    HOST,
                    port,
                    connections,
                    population.customers[g::count],
                    population.items,
                ),
                daemon=True,
            )
            process.start()
            theirs.close()
            pipes.append(ours)
            processes.append(process)
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise ApiBenchError("a load generator did not start")
        yield pipes
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()
