"""Reconcile: prove the ledger's invariants from the database, in one snapshot.

Checks (``shared/RELIABILITY.md`` items 1-5 and 8 that concern the ledger):

- ``transfers_balance``: every transfer that took effect moves a positive
  amount between two different existing accounts of its own currency.
- ``currencies_sum_to_zero``: per currency, posted debits equal posted credits
  and pending debits equal pending credits over all accounts.
- ``counters_match_journal``: each account's stored counters equal the sums of
  its transfers (pending counters equal the sum of its open holds).
- ``balance_flags_hold``: no account breaks its balance flag or credit limit.
- ``holds_resolved_once``: each hold is resolved (posted, voided, expired) at
  most once, only by a resolution of a real hold, never for more than held.
- ``database_integrity``: the database's own integrity checks.

Each id appears once by construction: successes and remembered failures share
one primary key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from micropay.core.accounts import Account, AccountFlags
from micropay.core.engine import CounterDelta
from micropay.service.ports import LedgerStore

CHECKS = (
    "transfers_balance",
    "currencies_sum_to_zero",
    "counters_match_journal",
    "balance_flags_hold",
    "holds_resolved_once",
    "database_integrity",
)
_ZERO = CounterDelta(0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    detail: str


@dataclass(slots=True)
class ReconcileReport:
    accounts: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(CHECKS, 0)
        for violation in self.violations:
            counts[violation.check] += 1
        return counts

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "accounts": self.accounts,
            "violations_by_check": self.counts(),
            "violations": [{"check": v.check, "detail": v.detail} for v in self.violations],
        }


def reconcile(store: LedgerStore, *, details_max: int = 100) -> ReconcileReport:
    """Run every check; list at most ``details_max`` violations per check."""
    report = ReconcileReport()

    def add(check: str, details: list[str]) -> None:
        report.violations.extend(Violation(check, d) for d in details[:details_max])

    with store.read() as reader:
        add("transfers_balance", reader.ill_formed_transfers(details_max))
        add(
            "currencies_sum_to_zero",
            [
                f"{currency}: debits {c.debits_posted_micros} posted/{c.debits_pending_micros}"
                f" pending != credits {c.credits_posted_micros} posted/"
                f"{c.credits_pending_micros} pending"
                for currency, c in sorted(reader.balances_by_currency().items())
                if c.debits_posted_micros != c.credits_posted_micros
                or c.debits_pending_micros != c.credits_pending_micros
            ],
        )
        journal = reader.journal_counters()
        mismatched: list[str] = []
        broken: list[str] = []
        for account in reader.iter_accounts():
            report.accounts += 1
            stored = _counters(account)
            derived = journal.pop(account.id, _ZERO)
            if stored != derived:
                mismatched.append(f"account {account.id}: stored {stored} != journal {derived}")
            problem = _flag_problem(account)
            if problem:
                broken.append(problem)
        mismatched += [f"transfers reference missing account {i}" for i in sorted(journal)]
        add("counters_match_journal", mismatched)
        add("balance_flags_hold", broken)
        add("holds_resolved_once", reader.multiply_resolved_holds(details_max))
        add("database_integrity", reader.integrity_problems())
    return report


def _counters(account: Account) -> CounterDelta:
    return CounterDelta(
        account.debits_pending_micros,
        account.debits_posted_micros,
        account.credits_pending_micros,
        account.credits_posted_micros,
    )


def _flag_problem(a: Account) -> str | None:
    debits = a.debits_pending_micros + a.debits_posted_micros
    credit_total = a.credits_pending_micros + a.credits_posted_micros
    if a.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and (
        debits - a.credits_posted_micros > a.credit_limit_micros
    ):
        return f"account {a.id}: debits exceed credits beyond its credit limit"
    if a.flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS and (
        credit_total - a.debits_posted_micros > a.credit_limit_micros
    ):
        return f"account {a.id}: credits exceed debits beyond its credit limit"
    counters = (
        a.debits_pending_micros,
        a.debits_posted_micros,
        a.credits_pending_micros,
        a.credits_posted_micros,
    )
    if min(counters) < 0:
        return f"account {a.id}: a counter is negative"
    return None
