"""``micropay worker``: run the durable jobs (holds, charges, tabs, renewals, usage, payouts)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

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
def worker(database_url: str, once: bool, jobs: str, poll_s: float) -> None:
    """Run scheduled work; any number of workers may share one database (each job runs once)."""
    from micropay.processors.simulated import SimulatedProcessor
    from micropay.service.payments import Payments
    from micropay.service.payouts import Payouts
    from micropay.service.ports import StoreError
    from micropay.store import open_store
    from micropay.webhooks.delivery import Webhooks, register_webhook_jobs
    from micropay.webhooks.outbox import attach as attach_outbox
    from micropay.worker import Worker, payments_registry, register_payout_jobs

    try:
        store: Any = open_store(database_url)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    try:
        payments = Payments(store, SimulatedProcessor())
        attach_outbox(payments)
        registry = payments_registry(payments)
        register_webhook_jobs(registry, lambda: Webhooks(store))
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
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        click.echo(f"worker {runner.owner}: jobs {', '.join(runner.names)}")
        runner.run_forever(stop, poll_s)
    finally:
        store.close()
