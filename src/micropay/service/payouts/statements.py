"""Balances, statements (CSV and a readable one per period) and the payouts reconciliation.

Both statements read the same posted movements of the payee's three accounts
(pending, available, deposits; holds in flight are not movements yet), so the
readable statement's figures are sums of the CSV's rows of the same period:
sales + refunds + fees + payouts + other = closing - opening, where moves
between the payee's own accounts (a release, a micro-deposit take-back) count
in no line and net to zero.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from micropay.core.accounts import available_micros
from micropay.core.money import format_amount, from_minor_units
from micropay.core.transfers import StoredTransfer, TransferFlags
from micropay.payouts.plans import Bucket, Payee, PayoutCode, payee_account
from micropay.service.payouts.base import CHECK, Binder, PayoutsBase, mixed_in, movement_name
from micropay.service.ports import PaymentsStore
from micropay.service.reconcile import Violation

# Which statement line each movement counts in (codes not listed count in "other").
LINE_OF_CODE: dict[int, str] = {
    PayoutCode.sale_share: "sales",
    PayoutCode.share_reversal: "refunds",
    PayoutCode.platform_fee: "fees",
    PayoutCode.fee_reversal: "fees",
    PayoutCode.processor_fee: "fees",
    PayoutCode.dispute_fee: "fees",
    PayoutCode.payout: "payouts",
    PayoutCode.micro_deposit: "payouts",
}
INTERNAL_CODES = frozenset({int(PayoutCode.share_release), int(PayoutCode.micro_deposit_return)})
LINES = ("sales", "refunds", "fees", "payouts", "other")
_SKIPPED = int(TransferFlags.PENDING | TransferFlags.VOID_PENDING | TransferFlags.EXPIRE_PENDING)


@dataclass(frozen=True, slots=True)
class Movement:
    """One posted leg on one of the payee's accounts, with that account's balance after it."""

    transfer: StoredTransfer
    bucket: Bucket
    amount_micros: int  # credit positive
    balance_micros: int


@dataclass(frozen=True, slots=True)
class Statement:
    """A payee's period [start, end) in figures (micros, credit positive; a debt is negative)."""

    payee_id: int
    payee_name: str
    currency: str
    start_us: int
    end_us: int
    opening_micros: int  # all three accounts together
    lines: dict[str, int]  # sales, refunds, fees, payouts, other: signed sums
    closing_micros: int
    closing_by_bucket: dict[Bucket, int] = field(default_factory=dict)
    payouts: tuple[tuple[int, str, int], ...] = ()  # (time µs, reference, amount micros > 0)

    def balanced(self) -> bool:
        return self.opening_micros + sum(self.lines.values()) == self.closing_micros


def _utc(us: int) -> str:
    return dt.datetime.fromtimestamp(us // 1_000_000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class StatementsMixin(PayoutsBase):
    """Balances and statements (CSV, figures, readable text) of one payee."""

    # --- statements ------------------------------------------------------------------

    def balances(self, payee_id: int) -> dict[Bucket, int]:
        """The payee's balance in each bucket (credit-normal: negative is a debt)."""
        payee = self.get_payee(payee_id)
        if payee is None:
            raise KeyError(f"no payee {payee_id}")
        ids = {b: payee_account(payee_id, b, payee.currency) for b in Bucket}
        accounts = self.payments.ledger.accounts(list(ids.values()))
        return {b: available_micros(accounts[i]) for b, i in ids.items()}

    def _payee(self, payee_id: int) -> Payee:
        payee = self.get_payee(payee_id)
        if payee is None:
            raise KeyError(f"no payee {payee_id}")
        return payee

    def _movements(self, payee: Payee, end_us: int) -> Iterator[Movement]:
        """Every posted movement of the payee's accounts before ``end_us``, oldest first."""
        bucket_of = {payee_account(payee.id, b, payee.currency): b for b in Bucket}
        balance: dict[Bucket, int] = defaultdict(int)
        with self.store.read() as reader:
            for t in reader.iter_transfers():
                if t.created_at_us >= end_us:
                    break
                if t.flags & _SKIPPED:
                    continue
                for account_id, sign in ((t.debit_account_id, -1), (t.credit_account_id, 1)):
                    bucket = bucket_of.get(account_id)
                    if bucket is None:
                        continue
                    balance[bucket] += sign * t.amount_micros
                    yield Movement(t, bucket, sign * t.amount_micros, balance[bucket])

    def statement_csv(self, payee_id: int, start_us: int, end_us: int) -> str:
        """Every posted movement of the payee's accounts in [start, end), with running balances.

        Columns: time (UTC, ISO 8601), account (pending|available|deposits),
        movement, reference, amount (credit positive), balance of that account.
        """
        payee = self._payee(payee_id)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["time", "account", "movement", "reference", "amount", "balance"])
        for m in self._movements(payee, end_us):
            t = m.transfer
            if t.created_at_us < start_us:
                continue
            writer.writerow(
                [
                    dt.datetime.fromtimestamp(t.created_at_us / 1e6, tz=dt.UTC).isoformat(),
                    m.bucket.name,
                    movement_name(t.code),
                    t.reference,
                    format_amount(m.amount_micros, t.currency),
                    format_amount(m.balance_micros, t.currency),
                ]
            )
        return out.getvalue()

    def statement(self, payee_id: int, start_us: int, end_us: int) -> Statement:
        """The period [start, end) in figures: opening, one sum per line, closing."""
        if not start_us < end_us:
            raise ValueError("a statement period must end after it starts")
        payee = self._payee(payee_id)
        opening = 0
        by_bucket: dict[Bucket, int] = dict.fromkeys(Bucket, 0)
        lines = dict.fromkeys(LINES, 0)
        payouts: list[tuple[int, str, int]] = []
        for m in self._movements(payee, end_us):
            t = m.transfer
            by_bucket[m.bucket] = m.balance_micros
            if t.created_at_us < start_us:
                opening += m.amount_micros
                continue
            if t.code in INTERNAL_CODES:
                continue  # between the payee's own accounts: nets to zero
            line = LINE_OF_CODE.get(t.code, "other")
            lines[line] += m.amount_micros
            if line == "payouts":
                payouts.append((t.created_at_us, t.reference, -m.amount_micros))
        return Statement(
            payee.id,
            payee.name,
            payee.currency,
            start_us,
            end_us,
            opening,
            lines,
            sum(by_bucket.values()),
            by_bucket,
            tuple(payouts),
        )

    def statement_text(self, payee_id: int, start_us: int, end_us: int) -> str:
        """A readable statement of the period (plain text), the same figures as the CSV."""
        return render_statement(self.statement(payee_id, start_us, end_us))


def render_statement(s: Statement) -> str:
    """Plain text, one figure a line, amounts right-aligned in the payee's currency."""

    def money(micros: int) -> str:
        return f"{format_amount(micros, s.currency):>16} {s.currency}"

    rows = [
        f"Statement for {s.payee_name} (payee {s.payee_id})",
        f"Period {_utc(s.start_us)} to {_utc(s.end_us)} (end excluded)",
        "",
        f"{'Opening balance':<28}{money(s.opening_micros)}",
        f"{'Sales (your shares)':<28}{money(s.lines['sales'])}",
        f"{'Refunds':<28}{money(s.lines['refunds'])}",
        f"{'Fees':<28}{money(s.lines['fees'])}",
        f"{'Payouts':<28}{money(s.lines['payouts'])}",
    ]
    if s.lines["other"]:
        rows.append(f"{'Other adjustments':<28}{money(s.lines['other'])}")
    rows += [
        f"{'Closing balance':<28}{money(s.closing_micros)}",
        f"{'  of which on hold':<28}{money(s.closing_by_bucket.get(Bucket.pending, 0))}",
        f"{'  of which available':<28}{money(s.closing_by_bucket.get(Bucket.available, 0))}",
    ]
    if s.payouts:
        rows += ["", "Payouts made"]
        rows += [f"  {_utc(at)}  {ref:<24}{money(amount)}" for at, ref, amount in s.payouts]
    return "\n".join(rows) + "\n"


def reconcile_payouts(
    store: PaymentsStore,
    processor_payouts: Mapping[str, tuple[int, str]],
    exponent_of: Mapping[str, int] | None = None,
    *,
    bind: Binder = mixed_in,
) -> list[Violation]:
    """Compare the processor's payouts (id -> (minor units, currency)) with ours and the ledger.

    Every succeeded payout is at the processor for the same amount and posted
    exactly once in the ledger; nothing else is posted; the processor paid
    nothing we do not know.
    """
    problems: list[str] = []
    with store.write() as tx:
        records = bind(tx).payouts_for_reconcile()
    posted: dict[int, list[int]] = defaultdict(list)
    with store.read() as reader:
        for t in reader.iter_transfers():
            if t.reference.startswith("payout:") and t.flags & TransferFlags.POST_PENDING:
                posted[int(t.reference.removeprefix("payout:"))].append(t.amount_micros)
    seen: set[str] = set()
    for payout in records:
        if payout.status != "succeeded":
            if posted.get(payout.id):
                problems.append(f"payout {payout.id} is {payout.status} but was posted")
            continue
        seen.add(payout.processor_payout_id)
        at_processor = processor_payouts.get(payout.processor_payout_id)
        if at_processor is None:
            problems.append(
                f"payout {payout.id}: the processor has no {payout.processor_payout_id}"
            )
        elif from_minor_units(
            at_processor[0], (exponent_of or {}).get(payout.currency, 2)
        ) != payout.amount_micros or (at_processor[1] != payout.currency):
            problems.append(f"payout {payout.id}: processor amount differs")
        if posted.get(payout.id) != [payout.amount_micros]:
            problems.append(f"payout {payout.id}: posted {posted.get(payout.id)} in the ledger")
    for processor_id in sorted(set(processor_payouts) - seen):
        problems.append(f"processor payout {processor_id} is not in the ledger")
    return [Violation(CHECK, p) for p in problems]
