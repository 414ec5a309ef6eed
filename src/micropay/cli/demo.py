"""The ledger demo: a small publisher platform on an embedded SQLite file."""

from __future__ import annotations

import random
import time

import click

from micropay.core.accounts import AccountFlags, NewAccount, credit_balance_micros
from micropay.core.money import format_amount, parse_amount
from micropay.core.transfers import Transfer, TransferFlags
from micropay.service.ids import IdGenerator
from micropay.service.ledger import Ledger
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.store.migrate import upgrade

WORLD = 1  # money entering from the card network (processor clearing)
MERCHANTS = {10: "The Daily Byte", 11: "Long Reads Weekly", 12: "Chart Music"}
CUSTOMER_BASE = 1_000
CODE_TOPUP, CODE_PURCHASE, CODE_HOLD = 1, 2, 3


def run_demo(database_url: str, *, customers: int, purchases: int, seed: int) -> None:
    rng = random.Random(seed)
    upgrade(database_url)
    store = open_store(database_url)
    ledger = Ledger(store)
    try:
        _open_accounts(ledger, customers)
        new_id = IdGenerator()
        click.echo(f"micropay ledger demo on {database_url}")
        started = time.perf_counter()
        topups = [
            Transfer(
                new_id(),
                WORLD,
                CUSTOMER_BASE + i,
                parse_amount("5.00", "USD"),
                "USD",
                code=CODE_TOPUP,
                reference="top-up",
            )
            for i in range(customers)
        ]
        ledger.submit(topups)
        # A hold: reserve 1.00, then post 0.30 of it (pay for what was used).
        hold_id = new_id()
        hold = Transfer(
            hold_id,
            CUSTOMER_BASE,
            10,
            parse_amount("1.00", "USD"),
            "USD",
            code=CODE_HOLD,
            flags=TransferFlags.PENDING,
            timeout_s=3600,
        )
        post = Transfer(
            new_id(),
            0,
            0,
            parse_amount("0.30", "USD"),
            "",
            flags=TransferFlags.POST_PENDING,
            pending_id=hold_id,
        )
        hold_results = ledger.submit([hold, post])
        refused = 0
        with click.progressbar(length=purchases, label="purchases") as bar:
            done = 0
            while done < purchases:
                batch = []
                for _ in range(min(500, purchases - done)):
                    price = rng.choice(["0.05", "0.10", "0.25", "0.0004", "0.99"])
                    batch.append(
                        Transfer(
                            new_id(),
                            CUSTOMER_BASE + rng.randrange(customers),
                            rng.choice(list(MERCHANTS)),
                            parse_amount(price, "USD"),
                            "USD",
                            code=CODE_PURCHASE,
                            reference="article",
                        )
                    )
                results = ledger.submit(batch)
                refused += sum(1 for r in results if not r.ok)
                done += len(batch)
                bar.update(len(batch))

        elapsed = time.perf_counter() - started
        accounts = ledger.accounts([*MERCHANTS, CUSTOMER_BASE])
        click.echo(f"{purchases} purchases in {elapsed:.2f}s; {refused} refused for lack of funds")
        click.echo(f"hold then partial post: {[r.status.value for r in hold_results]}")
        for merchant_id, name in MERCHANTS.items():
            earned = credit_balance_micros(accounts[merchant_id])
            click.echo(f"  {name:<20} earned {format_amount(earned, 'USD'):>12} USD")
        wallet = accounts[CUSTOMER_BASE]
        balance = format_amount(credit_balance_micros(wallet), "USD")
        click.echo(f"  customer {CUSTOMER_BASE} wallet  {balance:>12} USD")
        report = reconcile(store)
        click.echo(f"reconcile: {'clean' if report.ok else report.counts()}")
        click.echo("next: micropay reconcile --json | micropay export beancount")
    finally:
        store.close()


def _open_accounts(ledger: Ledger, customers: int) -> None:
    dmnec = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    requests = [NewAccount(WORLD, "USD", "processor_clearing")]
    requests += [
        NewAccount(i, "USD", "merchant_payable", owner_ref=n) for i, n in MERCHANTS.items()
    ]
    requests += [
        NewAccount(
            CUSTOMER_BASE + i, "USD", "customer_wallet", owner_ref=f"customer-{i}", flags=dmnec
        )
        for i in range(customers)
    ]
    for start in range(0, len(requests), 5_000):
        ledger.create_accounts(requests[start : start + 5_000])
