"""``micropay worker``: run the durable jobs (holds, charges, tabs, renewals, usage, payouts)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from micropay.cli.api_cmd import ConfigError, build_processor, processor_option
from micropay.cli.options import database_url_option


@click.command()
@database_url_option
@click.option("--once", is_flag=True, help="One pass: enqueue the current runs, run what is due.")
@click.option(
    "--jobs",
    "jobs",
    default="",
    help="Comma-separated job names to run (default: all).",
)
@click.option(
    "--poll-s",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.1, 3_600),
    help="Seconds to wait when nothing was due.",
)
@click.option(
    "--metrics-port",
    default=0,
    type=click.IntRange(0, 65_535),
    help="Serve Prometheus metrics on 127.0.0.1:PORT (0: off).",
)
@processor_option
def worker(
    database_url: str,
    once: bool,
    jobs: str,
    poll_s: float,
    metrics_port: int,
    processor_kind: str,
) -> None:
    """Run scheduled work; any number of workers may share one database (each job runs once).

    Refuses to start on a database holding merchants of the other mode than the processor's.
    """
    from micropay.api.observability import Metrics, count_deliveries
    from micropay.api.runtime import other_mode_problem
    from micropay.service.payments import Payments
    from micropay.service.payouts import Payouts
    from micropay.service.ports import StoreError
    from micropay.store import open_store
    from micropay.webhooks.delivery import Webhooks, register_webhook_jobs
    from micropay.webhooks.outbox import attach as attach_outbox
    from micropay.worker import Worker, payments_registry, register_payout_jobs

    configured = build_processor(processor_kind, events=False)
    try:
        store: Any = open_store(database_url)
    except StoreError as error:
        configured.close()
        raise click.ClickException(str(error)) from None
    try:
        try:
            problem = other_mode_problem(store, configured.mode)
        except StoreError as error:  # e.g. not migrated yet
            raise click.ClickException(f"{error} (run: micropay db upgrade)") from None
        if problem is not None:
            raise ConfigError(problem)
        payments = Payments(store, configured.processor)
        attach_outbox(payments)
        metrics = Metrics()
        metrics.attach(payments)  # charges and tab settlements the worker makes
        registry = payments_registry(payments)
        register_webhook_jobs(
            registry,
            lambda: Webhooks(store),
            on_outcomes=lambda outcomes: count_deliveries(metrics, outcomes),
        )
        payouts = Payouts(payments)
        register_payout_jobs(registry, lambda: payouts)
        names = [n.strip() for n in jobs.split(",") if n.strip()] or None
        try:
            runner = Worker(store, registry, names=names)
        except ValueError as error:
            raise click.BadParameter(f"{error}; known: {', '.join(registry.names())}") from None
        if once:
            outcomes = runner.tick()
            for outcome in outcomes:
                detail = f" ({outcome.error})" if outcome.error else ""
                click.echo(f"{outcome.state:10} {outcome.run_key}{detail}")
            click.echo(f"{len(outcomes)} job(s) run")
            return
        if metrics_port:
            from prometheus_client import start_http_server

            start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        click.echo(
            f"worker {runner.owner}: jobs {', '.join(runner.names)}, {configured.describe()}"
        )
        runner.run_forever(stop, poll_s)
    finally:
        store.close()
        configured.close()
