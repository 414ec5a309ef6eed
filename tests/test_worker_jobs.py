"""micropay's own jobs in the worker: heartbeats, pages, the ``micropay worker`` command.

Long ``run`` jobs renew their lease with ``job.heartbeat()`` between units of
work and stop when it was lost; the tab, charge and payout jobs work through
everything due a page at a time; the command runs the payout jobs too.
"""

from __future__ import annotations

from typing import Any

from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments.models import FundingSource, PurchaseStatus
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.charges import tab_owed_micros
from micropay.service.payments import Payments
from micropay.service.reconcile import reconcile
from micropay.worker import Job, JobSpec, Registry, Worker, payments_registry
from micropay.worker.jobs import close_all_tab_periods


def test_the_worker_command_runs_the_payout_jobs(database_url: str) -> None:
    from click.testing import CliRunner

    from micropay.cli.worker_cmd import worker

    result = CliRunner().invoke(
        worker, ["--database-url", database_url, "--once"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    ran = {line.split()[1].split(":")[0] for line in result.output.splitlines()[:-1]}
    assert {"release_payout_shares", "run_payouts", "execute_payouts", "close_tab_periods"} <= ran
    assert {line.split()[0] for line in result.output.splitlines()[:-1]} == {"done"}
    again = CliRunner().invoke(worker, ["--database-url", database_url, "--once"])
    assert "run_payouts" not in again.output  # once per period


def test_the_due_charges_job_runs_every_due_charge_page_by_page(store: Any, clock: Any) -> None:
    """1,050 top-ups recorded but never run (say, a crash before the processor calls): one
    job run charges them all, 100 at a time (one ``run_due`` call takes at most 1,000)."""
    from micropay.core.accounts import credit_balance_micros
    from micropay.payments.records import ChargePurpose, ChargeStatus

    processor = SimulatedProcessor()
    payments = Payments(store, processor, clock=clock)
    customer = payments.create_customer(
        "USD", processor_customer_token="c", payment_method_token="p"
    )
    amount = parse_amount("10.00", "USD")
    count = 1_050

    def record(tx: Any) -> None:
        for n in range(count):
            charge = payments.charges.new_charge(
                customer, ChargePurpose.topup, amount, "USD", client_key=f"k{n}", fingerprint="f"
            )
            assert charge is not None
            tx.insert_charge(charge)

    payments.charges.tx(record)
    worker = Worker(store, payments_registry(payments), clock=clock, names=["run_due_charges"])
    assert [o.state for o in worker.tick()] == ["done"]
    assert len(processor.succeeded_charges()) == count
    with store.read() as tx:
        statuses = {c.status for c in tx.charges_for_reconcile()}
    assert statuses == {ChargeStatus.succeeded.value}
    wallet_id = chart.wallet_account(customer.id, "USD")
    assert credit_balance_micros(payments.ledger.accounts([wallet_id])[wallet_id]) == count * amount
    assert reconcile(store).ok


# --- heartbeats: long jobs keep their lease ---------------------------------------------


def test_a_heartbeat_keeps_a_long_job_leased(store: Any, clock: Any) -> None:
    steps: list[int] = []
    rescues: list[str] = []
    rescuer_registry = Registry()
    rescuer_registry.register(JobSpec("long", run=lambda job: rescues.append(job.run_key)))
    rescuer = Worker(store, rescuer_registry, clock=clock, owner="rescuer")

    def long(job: Job) -> None:
        for step in range(10):
            clock.advance(15)  # 150 s in all, five leases of 30 s
            job.heartbeat()
            steps.append(step)
            assert rescuer.run_due() == []  # the renewed lease keeps the job ours

    registry = Registry()
    registry.register(JobSpec("long", run=long, lease_s=30))
    worker = Worker(store, registry, clock=clock, owner="first")
    worker.enqueue("long", "long:1")
    assert [(o.run_key, o.state) for o in worker.run_due()] == [("long:1", "done")]
    assert steps == list(range(10))
    assert rescues == []
    row = worker.job("long:1")
    assert row is not None
    assert (row.state, row.attempts) == ("done", 1)


def test_a_job_whose_lease_was_lost_stops_at_its_next_heartbeat(store: Any, clock: Any) -> None:
    steps: list[int] = []
    rescues: list[str] = []
    rescuer_registry = Registry()
    rescuer_registry.register(JobSpec("long", run=lambda job: rescues.append(job.run_key)))
    rescuer = Worker(store, rescuer_registry, clock=clock, owner="rescuer")

    def stalls(job: Job) -> None:
        for step in range(10):
            job.heartbeat()
            steps.append(step)
            if step == 2:
                clock.advance(31)  # stalled past its 30 s lease: another worker takes the job
                assert [o.state for o in rescuer.run_due()] == ["done"]

    registry = Registry()
    registry.register(JobSpec("long", run=stalls, lease_s=30))
    worker = Worker(store, registry, clock=clock, owner="first")
    worker.enqueue("long", "long:1")
    assert [(o.run_key, o.state) for o in worker.run_due()] == [("long:1", "lease_lost")]
    assert steps == [0, 1, 2]  # stopped at the heartbeat after the takeover
    assert rescues == ["long:1"]
    row = worker.job("long:1")
    assert row is not None
    assert (row.state, row.attempts) == ("done", 2)


def test_heartbeat_in_a_transaction_job_is_a_no_op(store: Any, clock: Any) -> None:
    beats: list[str] = []

    def in_tx(tx: Any, job: Job) -> None:
        clock.advance(100)
        job.heartbeat()  # nothing to renew: the lease is checked at commit
        beats.append(job.run_key)

    registry = Registry()
    registry.register(JobSpec("short", run_in_tx=in_tx, lease_s=300))
    worker = Worker(store, registry, clock=clock)
    worker.enqueue("short", "short:1")
    assert [o.state for o in worker.run_due()] == ["done"]
    assert beats == ["short:1"]


def test_the_tab_closing_job_closes_every_due_tab_page_by_page(store: Any, clock: Any) -> None:
    payments = Payments(store, SimulatedProcessor(), clock=clock)
    merchant = payments.create_merchant("Press", "USD", funding_policy=(FundingSource.tab,))
    payments.set_item(merchant.id, "article", "An article", parse_amount("0.60", "USD"))
    customers = []
    for n in range(5):
        c = payments.create_customer("USD", processor_customer_token="c", payment_method_token="p")
        assert payments.purchase(merchant.id, c.id, "article", f"k{n}").status is PurchaseStatus.ok
        customers.append(c.id)
    clock.advance(payments.tab_policy.period_s + 1)
    beats: list[int] = []
    job = Job("close_tab_periods:x", "close_tab_periods", {}, clock(), 1, lambda: beats.append(1))
    assert close_all_tab_periods(payments, job, page=2) == 5
    assert len(beats) == 3  # pages of 2, 2 and 1
    tabs = payments.ledger.accounts([chart.tab_account(c, "USD") for c in customers])
    assert [tab_owed_micros(a) for a in tabs.values()] == [0] * 5
    assert close_all_tab_periods(payments, job, page=2) == 0
    assert reconcile(store).ok
