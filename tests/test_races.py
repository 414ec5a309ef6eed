"""Concurrency: double spend, holds race and idempotency race, across OS processes.

Every race runs in a :class:`race_pool.RacePool`: two spawned processes, each
with its own store connections and threads, released together by one shared
barrier, and kept alive across rounds. Each test prints its figures (run with
``-s`` to see them) and ends with reconcile.

Rounds: ``MICROPAY_RACE_ROUNDS`` (double spend, default 30) and
``MICROPAY_HOLDS_ROUNDS`` (holds race, default 100).

The double-spend harness proves it has teeth with two controls:

- a deliberately racy ledger (``racy_for_tests``: check in one database
  transaction, write in another) with the database's CHECK constraint switched
  off must show an overspend;
- the same racy ledger with the CHECK constraint on must commit no overspend:
  the database itself refuses the overdraft (the racy writers get errors).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg

from conftest import FakeClock
from micropay.core.accounts import AccountFlags, NewAccount, available_micros
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import Transfer, TransferFlags
from micropay.service.ledger import Ledger, expiry_id
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from race_pool import Op, RacePool, Result, spread, transfer_tuple

S = TransferStatus
WALLET_FLAGS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
SOURCE, MERCHANT = 1, 2
DEBIT_MICROS = 1_000
AFFORDABLE = 10
CONCURRENT_DEBITS = 64
PROCESSES = 2
SLOTS = CONCURRENT_DEBITS // PROCESSES  # one connection and thread per debit
RACE_ROUNDS = int(os.environ.get("MICROPAY_RACE_ROUNDS", "30"))
HOLDS_ROUNDS = int(os.environ.get("MICROPAY_HOLDS_ROUNDS", "100"))
CONTROL_ROUNDS_MAX = 20
CHECK_CONSTRAINT = "account_debits_must_not_exceed_credits"


def open_base_accounts(ledger: Ledger) -> None:
    results = ledger.create_accounts(
        [NewAccount(SOURCE, "USD", "processor_clearing"), NewAccount(MERCHANT, "USD", "merchant")]
    )
    assert [r.status for r in results] == [AccountStatus.ok] * 2


def open_funded_wallet(ledger: Ledger, wallet_id: int, fund_id: int, amount_micros: int) -> None:
    created = ledger.create_accounts([NewAccount(wallet_id, "USD", "wallet", flags=WALLET_FLAGS)])
    assert created[0].status is AccountStatus.ok
    funded = ledger.submit([Transfer(fund_id, SOURCE, wallet_id, amount_micros, "USD")])
    assert funded[0].status is S.ok


def flatten(results: list[list[list[Result]]]) -> list[tuple[str, bool]]:
    return [r for per_proc in results for per_slot in per_proc for op in per_slot for r in op]


def is_error(status: str) -> bool:
    return status.startswith("error:")


# --- double spend -------------------------------------------------------------


@dataclass
class SpendFigures:
    rounds: int = 0
    exactly_ten: int = 0
    overspends: int = 0  # rounds with more than 10 successes or more than 10 debits committed
    errors: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    first_error: str = ""
    bad_rounds: list[str] = field(default_factory=list)  # not exactly 10 ok + 54 exceeds_credits

    def line(self, label: str) -> str:
        return (
            f"[{label}] rounds={self.rounds} exactly_10={self.exactly_ten}/{self.rounds}"
            f" overspends={self.overspends} errors={self.errors} bad_rounds={len(self.bad_rounds)}"
            f" statuses={dict(self.statuses)}"
        )


def run_double_spend(
    url: str,
    rounds: int,
    *,
    racy: bool = False,
    ignore_check: bool = False,
    until: Callable[[SpendFigures], bool] | None = None,
) -> SpendFigures:
    """``rounds`` rounds of 64 concurrent debits on a wallet that affords 10.

    Rounds that are not exactly 10 ``ok`` and 54 ``exceeds_credits`` (no error,
    no replay, the wallet debited exactly 10 times) are listed in ``bad_rounds``.
    """
    figures = SpendFigures()
    store = open_store(url)
    ledger = Ledger(store)
    open_base_accounts(ledger)
    try:
        with RacePool(
            url, processes=PROCESSES, slots=SLOTS, racy=racy, ignore_check=ignore_check
        ) as pool:
            for r in range(rounds):
                wallet = 1_000 + r
                open_funded_wallet(ledger, wallet, 10_000 + r, AFFORDABLE * DEBIT_MICROS)
                debits = [
                    [debit_op(1_000_000 + r * 1_000 + k, wallet)] for k in range(CONCURRENT_DEBITS)
                ]
                outcome = flatten(pool.run_round(spread(debits, PROCESSES, SLOTS)))
                assert len(outcome) == CONCURRENT_DEBITS
                statuses = Counter(s.split(":")[0] if is_error(s) else s for s, _ in outcome)
                figures.rounds += 1
                figures.statuses.update(statuses)
                errors = [s for s, _ in outcome if is_error(s)]
                figures.errors += len(errors)
                if errors and not figures.first_error:
                    figures.first_error = errors[0]
                debited = ledger.accounts([wallet])[wallet].debits_posted_micros
                oks = statuses[S.ok.value]
                if oks > AFFORDABLE or debited > AFFORDABLE * DEBIT_MICROS:
                    figures.overspends += 1
                if oks == AFFORDABLE:
                    figures.exactly_ten += 1
                wallet_after = ledger.accounts([wallet])[wallet]
                expected = {
                    S.ok.value: AFFORDABLE,
                    S.exceeds_credits.value: CONCURRENT_DEBITS - AFFORDABLE,
                }
                if (
                    errors
                    or statuses != expected
                    or any(replayed for _, replayed in outcome)
                    or debited != AFFORDABLE * DEBIT_MICROS
                    or available_micros(wallet_after) != 0
                ):
                    figures.bad_rounds.append(f"round {r}: {dict(statuses)} {errors[:2]}")
                if until is not None and until(figures):
                    break
        return figures
    finally:
        store.close()


def for_racy_writers(url: str) -> str:
    """PostgreSQL: detect deadlocks after 20 ms instead of 1 s for the racy controls.

    The racy ledger's write transaction updates the wallet and the merchant
    without first locking them in id order (the real paths do), so racy writers
    deadlock with each other by design; with the default ``deadlock_timeout``
    each one stalls the round for a second.
    """
    if not url.startswith("postgresql://"):
        return url
    return f"{url}%20-cdeadlock_timeout%3D20ms"


def debit_op(transfer_id: int, wallet: int) -> Op:
    debit = Transfer(transfer_id, wallet, MERCHANT, DEBIT_MICROS, "USD")
    return ("submit", None, [transfer_tuple(debit)])


def drop_check_constraint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE accounts DROP CONSTRAINT {CHECK_CONSTRAINT}")


def test_double_spend(
    store_kind: str, new_database_url: Callable[[str], str], record_property: Callable[..., None]
) -> None:
    url = new_database_url(store_kind)
    figures = run_double_spend(url, RACE_ROUNDS)
    print(figures.line(f"double spend {store_kind}"))
    record_property("double_spend", figures.line(store_kind))
    assert figures.overspends == 0
    assert figures.bad_rounds == []
    assert figures.exactly_ten == figures.rounds == RACE_ROUNDS
    store = open_store(url)
    try:
        report = reconcile(store)
    finally:
        store.close()
    assert report.ok, report.violations


def test_negative_control_racy_ledger_without_check_overspends(
    store_kind: str, new_database_url: Callable[[str], str], record_property: Callable[..., None]
) -> None:
    """The harness has teeth: a check-then-act ledger with no CHECK constraint overspends."""
    url = new_database_url(store_kind)
    if store_kind == "postgres":
        drop_check_constraint(url)
    figures = run_double_spend(
        for_racy_writers(url),
        CONTROL_ROUNDS_MAX,
        racy=True,
        ignore_check=store_kind == "sqlite",
        until=lambda f: f.overspends > 0,
    )
    store = open_store(url)
    try:
        report = reconcile(store)
    finally:
        store.close()
    broken = report.counts()["balance_flags_hold"]
    line = figures.line(f"negative control {store_kind}") + f" reconcile_broken_flags={broken}"
    print(line)
    record_property("negative_control", line)
    assert figures.overspends > 0 or broken > 0, "the harness detected no overspend: no teeth"
    assert broken > 0, "reconcile must report the overdrawn wallet"


def test_control_racy_ledger_is_stopped_by_check_constraint(
    store_kind: str, new_database_url: Callable[[str], str], record_property: Callable[..., None]
) -> None:
    """The CHECK constraint is a real last line: racy writers get errors, nothing overdraws."""
    url = new_database_url(store_kind)
    figures = run_double_spend(
        for_racy_writers(url),
        CONTROL_ROUNDS_MAX,
        racy=True,
        until=lambda f: f.errors > 0 and f.rounds >= 3,
    )
    line = (
        figures.line(f"check constraint control {store_kind}")
        + f" first_error={figures.first_error!r}"
    )
    print(line)
    record_property("check_control", line)
    assert figures.overspends == 0
    assert figures.errors > 0, "no overdraft was attempted: the control proves nothing"
    assert "check" in figures.first_error.lower() or "constraint" in figures.first_error.lower()
    store = open_store(url)
    try:
        report = reconcile(store)
    finally:
        store.close()
    assert report.ok, report.violations


# --- holds race ---------------------------------------------------------------

HOLD_MICROS = 10_000
T0_US = 1_767_225_600_000_000
BEFORE_EXPIRY_US = T0_US + 1_000_000
AFTER_EXPIRY_US = T0_US + 120_000_000
HOLD_TIMEOUT_S = 60
LOSING = {
    S.pending_transfer_already_posted.value,
    S.pending_transfer_already_voided.value,
    S.pending_transfer_expired.value,
}


def resolution(transfer_id: int, flags: TransferFlags, hold_id: int, amount: int = 0) -> Transfer:
    return Transfer(transfer_id, 0, 0, amount, "", flags=int(flags), pending_id=hold_id)


def hold_racers(hold_id: int) -> dict[str, Op]:
    """Six racers on one hold; posts and the void run before its expiry, expiries after."""
    post, void = TransferFlags.POST_PENDING, TransferFlags.VOID_PENDING

    def submit(at_us: int, t: Transfer, kind: str = "submit") -> Op:
        return (kind, at_us, [transfer_tuple(t)])

    return {
        "post": submit(BEFORE_EXPIRY_US, resolution(hold_id + 1, post, hold_id)),
        "partial": submit(
            BEFORE_EXPIRY_US, resolution(hold_id + 2, post, hold_id, HOLD_MICROS // 2)
        ),
        "void": submit(BEFORE_EXPIRY_US, resolution(hold_id + 3, void, hold_id)),
        "post_again": submit(BEFORE_EXPIRY_US, resolution(hold_id + 4, post, hold_id)),
        # The expiry job's own request (derived id), sent directly and by the job.
        "expire": submit(
            AFTER_EXPIRY_US,
            resolution(expiry_id(hold_id), TransferFlags.EXPIRE_PENDING, hold_id),
            "submit_system",
        ),
        "expire_job": ("expire", AFTER_EXPIRY_US),
    }


def test_holds_race(
    store_kind: str, new_database_url: Callable[[str], str], record_property: Callable[..., None]
) -> None:
    """Post, partial post, void and expiry race on one hold: exactly one wins."""
    url = new_database_url(store_kind)
    store = open_store(url)
    ledger = Ledger(store, clock=lambda: T0_US)
    open_base_accounts(ledger)
    winners: Counter[str] = Counter()
    losers: Counter[str] = Counter()
    replays = 0
    processes, slots = 2, 3
    try:
        with RacePool(url, processes=processes, slots=slots) as pool:
            for r in range(HOLDS_ROUNDS):
                wallet, hold_id = 100_000 + r, 2_000_000 + r * 10
                open_funded_wallet(ledger, wallet, 3_000_000 + r, HOLD_MICROS)
                hold = Transfer(
                    hold_id,
                    wallet,
                    MERCHANT,
                    HOLD_MICROS,
                    "USD",
                    flags=int(TransferFlags.PENDING),
                    timeout_s=HOLD_TIMEOUT_S,
                )
                assert ledger.submit([hold])[0].status is S.ok
                assert available_micros(ledger.accounts([wallet])[wallet]) == 0
                racers = hold_racers(hold_id)
                names = list(racers)
                # Rotate which slot (and so which process) each racer gets, round by round.
                shift = r % len(names)
                names = names[shift:] + names[:shift]
                results = pool.run_round(spread([[racers[n]] for n in names], processes, slots))
                by_name = {}
                for index, n in enumerate(names):
                    proc, slot = index % processes, index // processes
                    by_name[n] = results[proc][slot][0]
                won = [n for n, res in by_name.items() for s, rep in res if s == "ok" and not rep]
                assert len(won) == 1, f"round {r}: winners {won}: {by_name}"
                winners[won[0]] += 1
                for n, res in by_name.items():
                    for status, replayed in res:
                        if n == won[0] and not replayed:
                            continue
                        if status == "ok":
                            assert replayed, f"round {r}: {n} ok without replay: {by_name}"
                            replays += 1
                            continue
                        assert status in LOSING, f"round {r}: {n} got {status}"
                        losers[status] += 1
                account = ledger.accounts([wallet])[wallet]
                expected_posted = {
                    "post": HOLD_MICROS,
                    "post_again": HOLD_MICROS,
                    "partial": HOLD_MICROS // 2,
                }.get(won[0], 0)
                assert account.debits_pending_micros == 0
                assert account.debits_posted_micros == expected_posted
                assert available_micros(account) == HOLD_MICROS - expected_posted >= 0
        report = reconcile(store)
    finally:
        store.close()
    line = (
        f"[holds race {store_kind}] rounds={HOLDS_ROUNDS} one_winner={HOLDS_ROUNDS}/{HOLDS_ROUNDS}"
        f" winners={dict(winners)} losers={dict(losers)} replays={replays}"
    )
    print(line)
    record_property("holds_race", line)
    assert report.ok, report.violations
    # Every kind of racer must win sometimes, or the race is not really a race.
    assert len(winners) >= 2, winners


# --- idempotency race ---------------------------------------------------------

IDEMPOTENCY_IDS = 20
COPIES = 20
FAILING_IDS = 5


def idempotency_ops(transfers: Sequence[Transfer]) -> list[list[Op]]:
    """Copy ``c`` of every transfer goes to slot ``c``; slots walk the ids in one order."""
    return [[("submit", None, [transfer_tuple(t)]) for t in transfers] for _ in range(COPIES)]


def test_idempotency_race(
    store_kind: str, new_database_url: Callable[[str], str], record_property: Callable[..., None]
) -> None:
    url = new_database_url(store_kind)
    store = open_store(url)
    ledger = Ledger(store)
    open_base_accounts(ledger)
    wallet = 500
    amounts = [(k + 1) * 1_000 for k in range(IDEMPOTENCY_IDS)]
    funded = sum(amounts)
    open_funded_wallet(ledger, wallet, 600, funded)
    good = [
        Transfer(700_000 + k, wallet, MERCHANT, amounts[k], "USD") for k in range(IDEMPOTENCY_IDS)
    ]
    # Ids that overdraw: the failure is remembered, and every copy replays it.
    failing = [
        Transfer(800_000 + k, wallet, MERCHANT, funded * 2, "USD") for k in range(FAILING_IDS)
    ]
    batch = good + failing
    processes, slots = 2, COPIES // 2
    try:
        with RacePool(url, processes=processes, slots=slots) as pool:
            outcome = pool.run_round(spread(idempotency_ops(batch), processes, slots))
            per_id: dict[int, Counter[tuple[str, bool]]] = {t.id: Counter() for t in batch}
            for per_proc in outcome:
                for per_slot in per_proc:
                    assert len(per_slot) == len(batch)
                    for t, res in zip(batch, per_slot, strict=True):
                        per_id[t.id].update(res)
            for t in good:
                assert per_id[t.id] == {("ok", False): 1, ("ok", True): COPIES - 1}, per_id[t.id]
            for t in failing:
                assert per_id[t.id] == {
                    ("exceeds_credits", False): 1,
                    ("exceeds_credits", True): COPIES - 1,
                }, per_id[t.id]
            account = ledger.accounts([wallet])[wallet]
            assert account.debits_posted_micros == funded
            assert ledger.accounts([MERCHANT])[MERCHANT].credits_posted_micros == funded
            # The same ids with changed amounts, concurrently: all refused, nothing moves.
            changed = [
                Transfer(t.id, t.debit_account_id, t.credit_account_id, t.amount_micros + 1, "USD")
                for t in batch
            ]
            conflicts = flatten(pool.run_round(spread(idempotency_ops(changed), processes, slots)))
            assert len(conflicts) == len(batch) * COPIES
            assert Counter(conflicts) == {
                (S.id_already_used_with_different_request.value, False): len(batch) * COPIES
            }
            assert ledger.accounts([wallet])[wallet] == account
        report = reconcile(store)
    finally:
        store.close()
    line = (
        f"[idempotency race {store_kind}] ids={len(batch)} copies={COPIES}"
        f" effects_per_id=1 replays={len(batch) * (COPIES - 1)}"
        f" conflicts={len(conflicts)}/{len(batch) * COPIES}"
    )
    print(line)
    record_property("idempotency_race", line)
    assert report.ok, report.violations


def test_a_client_cannot_block_the_expiry_of_a_hold(ledger: Ledger, clock: FakeClock) -> None:
    """The expiry job's derived id and the expire flag are the system's; clients are refused."""
    open_base_accounts(ledger)
    wallet, hold_id = 3, 40
    open_funded_wallet(ledger, wallet, 41, HOLD_MICROS)
    hold = Transfer(
        hold_id,
        wallet,
        MERCHANT,
        HOLD_MICROS,
        "USD",
        flags=int(TransferFlags.PENDING),
        timeout_s=HOLD_TIMEOUT_S,
    )
    assert ledger.submit([hold])[0].ok
    early = resolution(expiry_id(hold_id), TransferFlags.EXPIRE_PENDING, hold_id)
    squat = Transfer(expiry_id(hold_id), SOURCE, MERCHANT, 1, "USD")
    own_id = resolution(50, TransferFlags.EXPIRE_PENDING, hold_id)
    assert [r.status for r in ledger.submit([early])] == [S.id_reserved_for_system]
    assert [r.status for r in ledger.submit([squat])] == [S.id_reserved_for_system]
    assert [r.status for r in ledger.submit([own_id])] == [S.expire_reserved_for_system]
    clock.advance(HOLD_TIMEOUT_S + 1)
    expired = ledger.expire_holds()
    assert [(r.id, r.status) for r in expired] == [(expiry_id(hold_id), S.ok)]
    assert ledger.accounts([wallet])[wallet].debits_pending_micros == 0
    assert reconcile(ledger.store).ok


class SteppingClock:
    """A clock that reads ``readings`` in turn, then stays at the last one."""

    def __init__(self, readings: list[int]) -> None:
        self.readings = readings

    def __call__(self) -> int:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def test_a_clock_step_back_does_not_poison_an_expiry(store_kind: str, database_url: str) -> None:
    store = open_store(database_url)
    try:
        setup = Ledger(store, clock=lambda: T0_US)
        open_base_accounts(setup)
        wallet, hold_id = 3, 40
        open_funded_wallet(setup, wallet, 41, HOLD_MICROS)
        hold = Transfer(
            hold_id,
            wallet,
            MERCHANT,
            HOLD_MICROS,
            "USD",
            flags=int(TransferFlags.PENDING),
            timeout_s=HOLD_TIMEOUT_S,
        )
        assert setup.submit([hold])[0].ok
        # The job selects at T0+120 s; the clock then steps back to T0+1 s (an NTP step).
        job = Ledger(store, clock=SteppingClock([AFTER_EXPIRY_US, BEFORE_EXPIRY_US]))
        job.expire_holds()
        # Later runs, with a sane clock, must still release the hold.
        later = Ledger(store, clock=lambda: AFTER_EXPIRY_US)
        later.expire_holds()
        assert later.accounts([wallet])[wallet].debits_pending_micros == 0
    finally:
        store.close()
