"""``micropay bench``: reference workloads (``shared/BENCHMARKS.md``), reported, never asserted."""

from __future__ import annotations

import json
from typing import Any

import click

from micropay.cli.bench_tabs_cmd import tabs
from micropay.core import limits


@click.group()
def bench() -> None:
    """Benchmarks: throughput against the raw store doing the same writes."""


@bench.command("ledger")
@click.option(
    "--store", type=click.Choice(["sqlite", "postgres"]), default="sqlite", show_default=True
)
@click.option(
    "--database-url",
    default=None,
    help="sqlite: a file that must not exist yet (default: a temp file); "
    "postgres: the server/database to create fresh schemas in "
    "(default postgresql://postgres@127.0.0.1:5432/test).",
)
@click.option(
    "--transfers", default=200_000, show_default=True, type=click.IntRange(1, 100_000_000)
)
@click.option(
    "--batch", default=1_000, show_default=True, type=click.IntRange(1, limits.batch_transfers_max)
)
@click.option("--hot-share", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0))
@click.option("--accounts", default=10_000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--merchants", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--funding-micros",
    default=20_000_000,
    show_default=True,
    type=click.IntRange(1, 10**15),
    help="What each customer wallet is funded with (micros).",
)
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1_024),
    help="Callers submitting single transfers through group commit (needs --batch 1).",
)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_ledger(
    *,
    store: str,
    database_url: str | None,
    transfers: int,
    batch: int,
    hot_share: float,
    accounts: int,
    merchants: int,
    funding_micros: int,
    concurrency: int,
    seed: int,
    as_json: bool,
) -> None:
    """Ledger workload 1: customers pay merchants; ledger vs raw SQL, then reconcile."""
    from micropay.bench.databases import BenchDatabaseError
    from micropay.bench.ledger import BenchOptions, run_bench
    from micropay.bench.workload import Workload
    from micropay.service.ports import StoreError

    if concurrency > 1 and batch != 1:
        raise click.UsageError(
            "--concurrency > 1 needs --batch 1 (callers submit single transfers)"
        )
    workload = Workload(
        transfers=transfers,
        batch=batch,
        hot_share=hot_share,
        customers=accounts,
        merchants=merchants,
        funding_micros=funding_micros,
        seed=seed,
    )
    options = BenchOptions(
        store=store,
        workload=workload,
        database_url=database_url,
        concurrency=concurrency,
        progress=transfers >= 100_000,
    )
    try:
        report = run_bench(options)
    except (StoreError, BenchDatabaseError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(_summary(report))


@bench.command("api")
@click.option(
    "--store", type=click.Choice(["sqlite", "postgres"]), default="sqlite", show_default=True
)
@click.option(
    "--database-url",
    default=None,
    help="sqlite: the run writes <path>.api, which must not exist yet (default: a temp file);"
    " postgres: the server/database to create a fresh schema in"
    " (default postgresql://postgres@127.0.0.1:5432/test).",
)
@click.option("--customers", default=10_000, show_default=True, type=click.IntRange(2, 1_000_000))
@click.option(
    "--duration",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.2, 3_600.0),
    help="Seconds per measured phase.",
)
@click.option("--connections", default=64, show_default=True, type=click.IntRange(1, 1_024))
@click.option(
    "--generators",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Load generator processes (the connections are split between them).",
)
@click.option(
    "--warmup",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.0, 600.0),
    help="Seconds of purchases before the measured phases (not reported as figures).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_api(
    *,
    store: str,
    database_url: str | None,
    customers: int,
    duration: float,
    connections: int,
    generators: int,
    warmup: float,
    as_json: bool,
) -> None:
    """API workload 2: purchases/s through `micropay serve` vs its health-check ceiling."""
    from micropay.bench.api import ApiBenchError, ApiBenchOptions, run_api_bench
    from micropay.bench.databases import BenchDatabaseError
    from micropay.service.ports import StoreError

    options = ApiBenchOptions(
        store=store,
        database_url=database_url,
        customers=customers,
        duration_s=duration,
        connections=connections,
        generators=generators,
        warmup_s=warmup,
    )
    try:
        report = run_api_bench(options)
    except (StoreError, BenchDatabaseError, ApiBenchError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(_api_summary(report))


def _api_summary(r: dict[str, Any]) -> str:
    cpu = r["cpu"]
    lines = [
        f"API workload on {r['store']}: {r['customers']:,} customers, {r['merchants']} merchants,"
        f" {r['api_keys']} keys, {r['connections']} connections,"
        f" {r['generators']} generator process(es), {r['duration_s']} s a phase"
        f" (setup {r['setup_s']} s)",
        f"  purchases {r['purchases_per_s']:>10,.1f} /s  closed loop"
        f"  (p50 {r['closed_loop_p50_ms']} ms, p99 {r['closed_loop_p99_ms']} ms)",
        f"  healthz   {r['healthz_per_s']:>10,.1f} /s  closed loop, same generator",
        f"  ratio     {r['ratio_to_ceiling']}   (hot merchant share {r['hot_share']})",
        f"  half load {r['half_load_rate']:,.1f} /s scheduled,"
        f" {r['half_load_achieved_per_s']:,.1f} /s done:"
        f" p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms (from the scheduled send time)",
    ]
    for name, c in cpu.items():
        lines.append(
            f"  cpu {name:<10} server {c['server_cpu_s']} s, generators"
            f" {c['generators_cpu_s']} s in {c['wall_s']} s"
        )
    lines += [
        f"  errors    {r['errors'] or 'none'}",
        f"  purchases answered 2xx {r['purchases_2xx']:,}, recorded by the server"
        f" {r['server_purchases']:,}",
        f"  reconcile {'clean' if r['reconcile_ok'] else 'VIOLATIONS'}",
    ]
    return "\n".join(lines)


def _summary(r: dict[str, object]) -> str:
    mode = (
        f"{r['concurrency']} concurrent callers, group commit"
        if r["concurrency"] != 1
        else f"batch {r['batch']}"
    )
    return "\n".join(
        [
            f"ledger workload on {r['store']}: {r['transfers']:,} transfers, {mode},"
            f" hot share {r['hot_share']}",
            f"  ledger   {r['transfers_per_s']:>12,.0f} transfers/s"
            f"   p50 {r['batch_p50_ms']} ms  p99 {r['batch_p99_ms']} ms  commits {r['commits']:,}",
            f"  raw      {r['raw_transfers_per_s']:>12,.0f} transfers/s"
            f"   p50 {r['raw_batch_p50_ms']} ms  p99 {r['raw_batch_p99_ms']} ms"
            f"  (batch {r['raw_batch']})",
            f"  ratio    {r['ratio_to_raw']}",
            f"  batches  netted {r['netted_batches']:,}  plain {r['plain_batches']:,}"
            f"  exact {r['exact_batches']:,}"
            f"  retries {r['retries']:,}",
            f"  outcome  accepted {r['accepted']:,}  rejected {r['rejected']:,}",
            f"  peak RSS {r['peak_rss_mb']} MB writing,"
            f" {r['peak_rss_mb_with_reconcile']} MB with reconcile",
            f"  reconcile {'clean' if r['reconcile_ok'] else 'VIOLATIONS'}",
        ]
    )


bench.add_command(tabs)
