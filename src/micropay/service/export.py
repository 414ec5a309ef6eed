"""Export the journal: CSV for spreadsheets and tools, Beancount for accountants.

Both exports read one consistent snapshot (``store.read()``) and stream it:
accounts and transfers come page by page from the reader and are written as
they arrive, so memory stays bounded whatever the size of the journal (one
page of ``page_rows_max`` rows plus a handful of scalars). Only transfers that
took effect are exported; remembered failures (rejections) never are.

CSV (:func:`export_csv`)
    One row per transfer that took effect, in ``(created_at, id)`` order, with
    the columns of :data:`CSV_COLUMNS`. ``created_at`` is ISO 8601 UTC with
    microseconds; ``amount`` is the decimal amount in currency units
    (:func:`micropay.core.money.format_amount`), ``amount_micros`` the exact
    integer; ``kind`` is one of ``single``, ``pending``, ``post``, ``void``,
    ``expire``; ``pending_id`` is empty unless the transfer resolves a hold.

    Formula injection: spreadsheet programs run a cell that starts with
    ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) as a formula. The
    only free-text column, ``reference``, gets a leading apostrophe ``'`` when
    it starts with one of those characters (OWASP "CSV injection"). A program
    that needs the raw reference strips one leading apostrophe from such a
    value; every other column is generated (numbers, codes, ISO dates).

Beancount (:func:`export_beancount`)
    A ledger that Beancount v3's ``bean-check`` accepts:

    - ``option "operating_currency"`` for each currency used by an account;
    - an ``open`` directive per account, constrained to its currency, dated the
      day the account was opened (never after the journal's first transfer);
    - one transaction per *posted* movement: single transfers and posts of
      holds (a post is linked to its hold with ``^hold-<id>``). Holds, voids
      and expiries move no posted money, so they appear only as comments;
    - a ``balance`` assertion for every account, dated the day after the last
      transaction (or opening), equal to the account's stored posted balance.
      Beancount recomputes each balance from the transactions, so
      ``bean-check`` proves the stored counters agree with the journal.
      Pending holds are not part of these balances.

    Amounts are written with six decimals, the exact micro-unit. Beancount
    would infer a balance assertion's tolerance from its precision (for six
    decimals: one micro, too loose), so every assertion states an explicit
    tolerance of zero (``~ 0``): the check is exact. Sign convention: a debit
    is positive, a credit negative, so an account's balance is posted debits
    minus posted credits.

    Account names: ``<Root>:Micropay:<Kind>:A<id>``, ``<Kind>`` being the
    account's kind in CamelCase (``customer_wallet`` -> ``CustomerWallet``).
    The root follows the account's normal side, first rule that matches:

    ============================================ ===============
    flags / kind                                 root
    ============================================ ===============
    flag DEBITS_MUST_NOT_EXCEED_CREDITS          ``Liabilities``
    flag CREDITS_MUST_NOT_EXCEED_DEBITS          ``Assets``
    kind contains ``clearing`` or ``receivable`` ``Assets``
    kind contains ``revenue`` or ``income``      ``Income``
    kind contains ``expense`` or ``fee``         ``Expenses``
    kind contains ``payable`` or ``wallet``      ``Liabilities``
    kind contains ``equity``                     ``Equity``
    anything else                                ``Assets``
    ============================================ ===============

    So ``fee_income`` is ``Income`` and ``fee_expense`` ``Expenses``. Narration
    is the transfer's reference (or ``transfer <id>`` without one), escaped
    for Beancount's string syntax so quotes, backslashes and newlines
    round-trip exactly.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from micropay.core.accounts import Account, AccountFlags
from micropay.core.money import MICROS_PER_UNIT, format_amount
from micropay.core.transfers import StoredTransfer, TransferFlags
from micropay.service.ports import LedgerReader, LedgerStore


class TextSink(Protocol):
    """Where an export writes: an open text file, ``sys.stdout``, a ``StringIO``."""

    def write(self, text: str, /) -> object: ...


CSV_COLUMNS: Final = (
    "id",
    "created_at",
    "kind",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "amount_micros",
    "currency",
    "code",
    "pending_id",
    "reference",
)
# Leading characters a spreadsheet treats as the start of a formula.
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_DAY: Final = dt.timedelta(days=1)
_ROOT_BY_KIND: Final = (
    (("clearing", "receivable"), "Assets"),
    (("revenue", "income"), "Income"),
    (("expense", "fee"), "Expenses"),
    (("payable", "wallet"), "Liabilities"),
    (("equity",), "Equity"),
)


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote."""

    accounts: int  # Beancount ``open`` directives (0 for CSV, which has no account rows)
    transfers: int  # CSV rows, or Beancount transactions (posted movements)


# --- transfer and account facts ------------------------------------------


def transfer_kind(flags: int) -> str:
    """``single``, ``pending``, ``post``, ``void`` or ``expire`` (``LINKED`` is orthogonal)."""
    if flags & TransferFlags.PENDING:
        return "pending"
    if flags & TransferFlags.POST_PENDING:
        return "post"
    if flags & TransferFlags.VOID_PENDING:
        return "void"
    if flags & TransferFlags.EXPIRE_PENDING:
        return "expire"
    return "single"


def moves_posted_money(transfer: StoredTransfer) -> bool:
    """Single transfers and posts change posted balances; holds, voids and expiries do not."""
    return transfer_kind(transfer.flags) in ("single", "post")


def iso_utc(created_at_us: int) -> str:
    """``2026-01-01T00:00:00.000400+00:00``: exact, no float on the way."""
    moment = _EPOCH + dt.timedelta(microseconds=created_at_us)
    return moment.isoformat(timespec="microseconds")


def utc_date(created_at_us: int) -> dt.date:
    return (_EPOCH + dt.timedelta(microseconds=created_at_us)).date()


def csv_safe(text: str) -> str:
    """Defuse spreadsheet formulas: prefix ``'`` to text starting with ``= + - @``, tab or CR."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def beancount_root(account: Account) -> str:
    """The Beancount root for an account's normal side (see the module table)."""
    if account.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS:
        return "Liabilities"
    if account.flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS:
        return "Assets"
    for words, root in _ROOT_BY_KIND:
        if any(word in account.kind for word in words):
            return root
    return "Assets"


def beancount_account(account: Account) -> str:
    """``Liabilities:Micropay:CustomerWallet:A2``: a valid Beancount account name."""
    camel = "".join(part[:1].upper() + part[1:] for part in account.kind.split("_") if part)
    return f"{beancount_root(account)}:Micropay:{camel or 'Account'}:A{account.id}"


def beancount_string(text: str) -> str:
    """``text`` as a quoted Beancount string that the parser reads back unchanged."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def beancount_number(micros: int) -> str:
    """Exact decimal with six places: ``400`` -> ``0.000400``, ``-1_500_000`` -> ``-1.500000``."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_UNIT)
    return f"{sign}{whole}.{frac:06d}"


# --- CSV -------------------------------------------------------------------


def csv_row(transfer: StoredTransfer) -> list[str]:
    return [
        str(transfer.id),
        iso_utc(transfer.created_at_us),
        transfer_kind(transfer.flags),
        str(transfer.debit_account_id),
        str(transfer.credit_account_id),
        format_amount(transfer.amount_micros, transfer.currency),
        str(transfer.amount_micros),
        transfer.currency,
        str(transfer.code),
        str(transfer.pending_id) if transfer.pending_id else "",
        csv_safe(transfer.reference),
    ]


def export_csv(store: LedgerStore, out: TextSink) -> ExportSummary:
    """Write every transfer that took effect as CSV (header first). Returns the row count."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    rows = 0
    with store.read() as reader:
        for transfer in reader.iter_transfers():
            writer.writerow(csv_row(transfer))
            rows += 1
    return ExportSummary(accounts=0, transfers=rows)


# --- Beancount -------------------------------------------------------------


def export_beancount(store: LedgerStore, out: TextSink) -> ExportSummary:
    """Write the journal as a Beancount file whose balance assertions ``bean-check`` verifies.

    Three passes over one snapshot, each streamed: accounts (``open``),
    transfers (transactions), accounts again (``balance``).
    """
    with store.read() as reader:
        currencies = sorted(reader.balances_by_currency())
        first_transfer = next(reader.iter_transfers(), None)
        first_day = utc_date(first_transfer.created_at_us) if first_transfer else None
        out.write("; micropay journal export (posted movements, balances as stored)\n")
        for currency in currencies:
            out.write(f'option "operating_currency" "{currency}"\n')
        out.write("\n")
        accounts, last_open = _write_opens(reader, out, first_day)
        transactions, last_day = _write_transactions(reader, out)
        days = [day for day in (last_open, last_day) if day is not None]
        if days:
            _write_balances(reader.iter_accounts(), out, max(days) + _ONE_DAY)
    return ExportSummary(accounts=accounts, transfers=transactions)


def _write_opens(
    reader: LedgerReader, out: TextSink, first_day: dt.date | None
) -> tuple[int, dt.date | None]:
    count = 0
    last: dt.date | None = None
    for account in reader.iter_accounts():
        day = utc_date(account.created_at_us)
        if first_day is not None and day > first_day:
            day = first_day  # a clock skew must not date an account after its transfers
        out.write(f"{day.isoformat()} open {beancount_account(account)} {account.currency}\n")
        out.write(f"  kind: {beancount_string(account.kind)}\n")
        count += 1
        last = day if last is None or day > last else last
    out.write("\n")
    return count, last


def _write_transactions(reader: LedgerReader, out: TextSink) -> tuple[int, dt.date | None]:
    # Account names are needed per transfer; looking them up page by page keeps
    # memory bounded (a cache of every account would grow with the ledger).
    count = 0
    last: dt.date | None = None
    for page in _pages(reader.iter_transfers()):
        ids = {t.debit_account_id for t in page} | {t.credit_account_id for t in page}
        names = {i: beancount_account(a) for i, a in reader.get_accounts(ids).items()}
        for transfer in page:
            day = utc_date(transfer.created_at_us)
            if moves_posted_money(transfer):
                _write_transaction(out, transfer, day, names)
                count += 1
                last = day
            else:
                _write_comment(out, transfer, day, names)
    return count, last


def _pages(
    transfers: Iterator[StoredTransfer], size: int = 1_000
) -> Iterator[list[StoredTransfer]]:
    page: list[StoredTransfer] = []
    for transfer in transfers:
        page.append(transfer)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def _write_transaction(
    out: TextSink, transfer: StoredTransfer, day: dt.date, names: dict[int, str]
) -> None:
    narration = transfer.reference or f"transfer {transfer.id}"
    link = f" ^hold-{transfer.pending_id}" if transfer.pending_id else ""
    number = beancount_number(transfer.amount_micros)
    out.write(
        f"{day.isoformat()} * {beancount_string(narration)}{link}\n"
        f'  transfer_id: "{transfer.id}"\n'
        f'  code: "{transfer.code}"\n'
        f"  {names[transfer.debit_account_id]}  {number} {transfer.currency}\n"
        f"  {names[transfer.credit_account_id]}  -{number} {transfer.currency}\n\n"
    )


def _write_comment(
    out: TextSink, transfer: StoredTransfer, day: dt.date, names: dict[int, str]
) -> None:
    # Only generated values here: a comment cannot hold escaped free text safely.
    kind = transfer_kind(transfer.flags)
    of_hold = f" of hold {transfer.pending_id}" if transfer.pending_id else ""
    out.write(
        f"; {day.isoformat()} {kind} {transfer.id}{of_hold}:"
        f" {names[transfer.debit_account_id]} -> {names[transfer.credit_account_id]}"
        f" {beancount_number(transfer.amount_micros)} {transfer.currency}"
        " (no posted movement)\n\n"
    )


def _write_balances(accounts: Iterator[Account], out: TextSink, day: dt.date) -> None:
    for account in accounts:
        posted = account.debits_posted_micros - account.credits_posted_micros
        out.write(
            f"{day.isoformat()} balance {beancount_account(account)}"
            f"  {beancount_number(posted)} ~ 0 {account.currency}\n"
        )
