"""Journal exports: CSV parses back to the counters; Beancount passes ``bean-check``.

The story: a customer tops up 10 USD and buys two articles at 0.0004 USD; a
European customer tops up 5 EUR and buys one; holds are posted in part,
voided, expired and one is left open; a linked chain pays a merchant and a
platform fee; two requests fail (one remembered) and must not appear.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from beancount import loader
from beancount.core import data
from click.testing import CliRunner

from micropay.cli.main import main
from micropay.core.accounts import Account, AccountFlags, NewAccount
from micropay.core.engine import CounterDelta
from micropay.core.limits import batch_transfers_max, page_rows_max
from micropay.core.money import format_amount, parse_amount
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import StoredTransfer, Transfer, TransferFlags
from micropay.service.export import (
    CSV_COLUMNS,
    beancount_account,
    beancount_number,
    beancount_root,
    csv_safe,
    export_beancount,
    export_csv,
)
from micropay.service.ledger import Ledger
from micropay.service.reconcile import reconcile

WALLET = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
PENDING = int(TransferFlags.PENDING)
POST = int(TransferFlags.POST_PENDING)
VOID = int(TransferFlags.VOID_PENDING)
LINKED = int(TransferFlags.LINKED)
BEAN_CHECK = Path(sys.executable).with_name("bean-check")
TRICKY_REFERENCE = '=HYPERLINK("http://x.test";"a\\b")\nsecond line; "quoted"\ttab'
DAY_S = 86_400


def usd(text: str) -> int:
    return parse_amount(text, "USD")


def eur(text: str) -> int:
    return parse_amount(text, "EUR")


def build_story(ledger: Ledger, clock) -> dict[str, set[int]]:  # type: ignore[no-untyped-def]
    """Returns the ids that must appear (``effective``) and must not (``failed``)."""
    results = ledger.create_accounts(
        [
            NewAccount(1, "USD", "processor_clearing"),
            NewAccount(2, "USD", "customer_wallet", flags=WALLET),
            NewAccount(3, "USD", "merchant_payable"),
            NewAccount(5, "USD", "fee_income"),
            NewAccount(6, "EUR", "processor_clearing"),
            NewAccount(4, "EUR", "customer_wallet", flags=WALLET),
            NewAccount(7, "EUR", "merchant_payable"),
        ]
    )
    assert {r.status for r in results} == {AccountStatus.ok}

    def ok(*transfers: Transfer) -> None:
        assert [r.status for r in ledger.submit(list(transfers))] == [TransferStatus.ok] * len(
            transfers
        )

    ok(
        Transfer(10, 1, 2, usd("10"), "USD", code=1, reference="top-up"),
        Transfer(13, 6, 4, eur("5"), "EUR", code=1, reference="@top-up"),
    )
    clock.advance(DAY_S)
    ok(
        Transfer(11, 2, 3, usd("0.0004"), "USD", code=2, reference=TRICKY_REFERENCE),
        Transfer(12, 2, 3, usd("0.0004"), "USD", code=2, reference="+article 2"),
        Transfer(14, 4, 7, eur("1.23"), "EUR", code=2, reference="-article 3"),
    )
    # Holds: posted in part, voided, expired, left open.
    ok(
        Transfer(20, 2, 3, usd("1"), "USD", code=3, flags=PENDING, timeout_s=600),
        Transfer(22, 2, 3, usd("0.5"), "USD", code=3, flags=PENDING),
        Transfer(24, 2, 3, usd("0.3"), "USD", code=3, flags=PENDING, timeout_s=10),
        Transfer(25, 4, 7, eur("0.10"), "EUR", code=3, flags=PENDING),
    )
    ok(
        Transfer(21, 0, 0, usd("0.25"), "", code=3, flags=POST, pending_id=20),
        Transfer(23, 0, 0, 0, "", code=3, flags=VOID, pending_id=22),
    )
    clock.advance(DAY_S)
    expired = ledger.expire_holds()
    assert [r.status for r in expired] == [TransferStatus.ok]
    # A linked chain: purchase and platform fee, all or nothing.
    ok(
        Transfer(30, 2, 3, usd("0.010000"), "USD", code=2, flags=LINKED),
        Transfer(31, 3, 5, usd("0.000123"), "USD", code=4),
    )
    # A remembered failure, and a chain that fails as a whole.
    assert ledger.submit([Transfer(40, 2, 3, usd("1000"), "USD")])[0].status is (
        TransferStatus.exceeds_credits
    )
    chain = ledger.submit(
        [
            Transfer(41, 2, 5, usd("0.01"), "USD", flags=LINKED),
            Transfer(42, 2, 3, usd("1000"), "USD"),
        ]
    )
    assert [r.ok for r in chain] == [False, False]
    assert ledger.submit([Transfer(40, 2, 3, usd("1000"), "USD")])[0].replayed
    report = reconcile(ledger.store)
    assert report.ok, report.violations
    effective = {10, 11, 12, 13, 14, 20, 21, 22, 23, 24, 25, 30, 31, expired[0].id}
    return {
        "effective": effective,
        "posted": {10, 11, 12, 13, 14, 21, 30, 31},
        "failed": {40, 41, 42},
    }


def beancount_text(ledger: Ledger) -> str:
    out = io.StringIO()
    export_beancount(ledger.store, out)
    return out.getvalue()


def bean_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BEAN_CHECK), str(path)], capture_output=True, text=True, timeout=60, check=False
    )


# --- Beancount -------------------------------------------------------------


def test_beancount_export_loads_cleanly_and_passes_bean_check(
    ledger: Ledger, clock, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    ids = build_story(ledger, clock)
    text = beancount_text(ledger)

    entries, errors, options = loader.load_string(text)
    assert errors == []
    assert set(options["operating_currency"]) == {"USD", "EUR"}
    transactions = [e for e in entries if isinstance(e, data.Transaction)]
    assert {int(t.meta["transfer_id"]) for t in transactions} == ids["posted"]
    balances = [e for e in entries if isinstance(e, data.Balance)]
    accounts = ledger.accounts(range(1, 8))
    assert len(balances) == len(accounts) == 7
    # The assertions state the stored counters; the loader checked them against
    # the transactions (zero errors above). Spot-check the wallet: 10 USD in.
    wallet = next(b for b in balances if b.account.endswith(":A2"))
    assert wallet.account == "Liabilities:Micropay:CustomerWallet:A2"
    expected = accounts[2].debits_posted_micros - accounts[2].credits_posted_micros
    assert wallet.amount.number.scaleb(6) == expected == -usd("10") + usd("0.2608")
    assert all(b.date > t.date for b in balances for t in transactions)
    # Sub-cent amounts survive exactly; the tricky reference round-trips.
    purchase = next(t for t in transactions if t.meta["transfer_id"] == "11")
    assert purchase.narration == TRICKY_REFERENCE
    assert [str(p.units) for p in purchase.postings] == ["0.000400 USD", "-0.000400 USD"]
    post = next(t for t in transactions if t.meta["transfer_id"] == "21")
    assert post.links == {"hold-20"}
    assert [str(p.units) for p in post.postings] == ["0.250000 USD", "-0.250000 USD"]
    for failed in ids["failed"]:
        assert f'transfer_id: "{failed}"' not in text

    path = tmp_path / "journal.beancount"
    path.write_text(text, encoding="utf-8")
    result = bean_check(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tampered_amount_fails_the_balance_assertion(ledger: Ledger, clock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Negative control: the check has teeth, down to one micro-unit of one purchase."""
    build_story(ledger, clock)
    text = beancount_text(ledger)
    start = text.index('transfer_id: "11"')
    end = text.index("\n\n", start)
    block = text[start:end]
    assert block.count("0.000400 USD") == 2
    # Both legs change, so the transaction still balances: only the assertions can tell.
    tampered = text[:start] + block.replace("0.000400 USD", "0.000401 USD") + text[end:]

    path = tmp_path / "tampered.beancount"
    path.write_text(tampered, encoding="utf-8")
    result = bean_check(path)
    assert result.returncode != 0
    assert "Balance failed" in result.stdout + result.stderr
    _entries, errors, _options = loader.load_string(tampered)
    assert len(errors) == 2  # the wallet and the merchant
    assert all("Balance failed" in e.message for e in errors)


def test_empty_ledger_exports_are_valid(ledger: Ledger) -> None:
    _entries, errors, _options = loader.load_string(beancount_text(ledger))
    assert errors == []
    out = io.StringIO()
    assert export_csv(ledger.store, out).transfers == 0
    assert out.getvalue().splitlines() == [",".join(CSV_COLUMNS)]


@pytest.mark.parametrize(
    ("kind", "flags", "root"),
    [
        ("anything", WALLET, "Liabilities"),
        ("processor_clearing", int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS), "Assets"),
        ("processor_clearing", 0, "Assets"),
        ("fee_receivable", 0, "Assets"),
        ("merchant_revenue", 0, "Income"),
        ("fee_income", 0, "Income"),
        ("fee_expense", 0, "Expenses"),
        ("processor_fee", 0, "Expenses"),
        ("merchant_payable", 0, "Liabilities"),
        ("owner_equity", 0, "Equity"),
        ("x9", 0, "Assets"),
    ],
)
def test_account_roots_follow_the_normal_side(kind: str, flags: int, root: str) -> None:
    account = Account(9, "USD", kind, "", flags, 0, 0, 0, 0, 0, 0)
    assert beancount_root(account) == root
    name = beancount_account(account)
    assert name.startswith(f"{root}:Micropay:")
    assert name.endswith(":A9")
    _entries, errors, _options = loader.load_string(f"2026-01-01 open {name} USD\n")
    assert errors == []


# --- CSV ---------------------------------------------------------------------


def csv_rows(ledger: Ledger) -> list[dict[str, str]]:
    out = io.StringIO(newline="")
    summary = export_csv(ledger.store, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert summary.transfers == len(rows)
    return rows


def test_csv_parses_back_to_the_ledger_counters(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    ids = build_story(ledger, clock)
    rows = csv_rows(ledger)
    assert {int(r["id"]) for r in rows} == ids["effective"]
    assert list(rows[0]) == list(CSV_COLUMNS)

    resolved = {int(r["pending_id"]) for r in rows if r["pending_id"]}
    sums: dict[int, list[int]] = {}
    for row in rows:
        micros = int(row["amount_micros"])
        assert row["amount"] == format_amount(micros, row["currency"])
        created = dt.datetime.fromisoformat(row["created_at"])
        assert created.tzinfo == dt.UTC
        assert row["created_at"].endswith("+00:00")
        debit = sums.setdefault(int(row["debit_account_id"]), [0, 0, 0, 0])
        credit = sums.setdefault(int(row["credit_account_id"]), [0, 0, 0, 0])
        if row["kind"] in ("single", "post"):
            debit[1] += micros
            credit[3] += micros
        elif row["kind"] == "pending" and int(row["id"]) not in resolved:
            debit[0] += micros
            credit[2] += micros
    for account_id, account in ledger.accounts(range(1, 8)).items():
        counters = CounterDelta(*sums.get(account_id, [0, 0, 0, 0]))
        stored = CounterDelta(
            account.debits_pending_micros,
            account.debits_posted_micros,
            account.credits_pending_micros,
            account.credits_posted_micros,
        )
        assert counters == stored, account_id

    by_id = {int(r["id"]): r for r in rows}
    assert by_id[11]["amount"] == "0.0004"
    assert by_id[11]["amount_micros"] == "400"
    assert by_id[14]["amount"] == "1.23"
    assert by_id[14]["currency"] == "EUR"
    assert (by_id[21]["kind"], by_id[21]["pending_id"], by_id[21]["amount_micros"]) == (
        "post",
        "20",
        "250000",
    )
    assert [by_id[i]["kind"] for i in (10, 20, 23)] == ["single", "pending", "void"]
    assert by_id[20]["pending_id"] == ""
    assert sum(r["kind"] == "expire" for r in rows) == 1
    # created_at is exact to the microsecond and in journal order.
    assert by_id[10]["created_at"] == "2026-01-01T00:00:00.000000+00:00"
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)


def test_csv_defuses_formulas_and_keeps_quotes_and_newlines(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    build_story(ledger, clock)
    by_id = {int(r["id"]): r for r in csv_rows(ledger)}
    assert by_id[11]["reference"] == "'" + TRICKY_REFERENCE  # quotes, newline, tab intact
    assert by_id[12]["reference"] == "'+article 2"
    assert by_id[13]["reference"] == "'@top-up"
    assert by_id[14]["reference"] == "'-article 3"
    assert by_id[10]["reference"] == "top-up"


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=1", "a=1"),
        ("", ""),
        ("'quoted", "'quoted"),
    ],
)
def test_csv_safe_table(text: str, safe: str) -> None:
    assert csv_safe(text) == safe


# --- CLI -------------------------------------------------------------------


def test_cli_writes_both_formats_to_files_and_stdout(
    ledger: Ledger, clock, database_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    build_story(ledger, clock)
    runner = CliRunner()
    csv_path = tmp_path / "journal.csv"
    bean_path = tmp_path / "journal.beancount"
    for command, path in (("csv", csv_path), ("beancount", bean_path)):
        result = runner.invoke(
            main, ["export", command, "--database-url", database_url, "--output", str(path)]
        )
        assert result.exit_code == 0, result.output
        assert not list(tmp_path.glob(".*.partial"))
    expected_csv = io.StringIO(newline="")
    export_csv(ledger.store, expected_csv)
    assert csv_path.read_bytes().decode("utf-8") == expected_csv.getvalue()
    assert bean_path.read_text(encoding="utf-8") == beancount_text(ledger)
    assert bean_check(bean_path).returncode == 0

    stdout = runner.invoke(main, ["export", "beancount", "--database-url", database_url])
    assert stdout.exit_code == 0
    assert stdout.stdout == beancount_text(ledger)


def test_cli_reports_a_bad_database_url_and_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    result = CliRunner().invoke(
        main, ["export", "csv", "--database-url", "mysql://nowhere/x", "--output", str(target)]
    )
    assert result.exit_code == 1
    assert "Error" in result.output
    assert list(tmp_path.iterdir()) == []


# --- bounded memory --------------------------------------------------------


class _CountingSink:
    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str, /) -> int:
        self.chars += len(text)
        return len(text)


class _SyntheticReader:
    """A reader that generates ``count`` transfers lazily, as a store pages them."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.accounts = {
            1: Account(1, "USD", "processor_clearing", "", 0, 0, 0, 0, 0, 0, 0),
            2: Account(2, "USD", "customer_wallet", "", WALLET, 0, 0, 0, 0, 0, 0),
        }

    def iter_accounts(self) -> Iterator[Account]:
        yield from self.accounts.values()

    def get_accounts(self, ids: object) -> dict[int, Account]:
        return dict(self.accounts)

    def balances_by_currency(self) -> dict[str, CounterDelta]:
        return {"USD": CounterDelta(0, 0, 0, 0)}

    def iter_transfers(self) -> Iterator[StoredTransfer]:
        for i in range(1, self.count + 1):
            yield StoredTransfer(
                i, 1, 2, 1_000 + i, "USD", 2, 0, 0, 0, f"article {i}", "", i * 1_000, 0
            )


class _SyntheticStore:
    kind = "synthetic"

    def __init__(self, count: int) -> None:
        self.reader = _SyntheticReader(count)

    @contextmanager
    def read(self) -> Iterator[_SyntheticReader]:
        yield self.reader


@pytest.mark.parametrize("exporter", [export_csv, export_beancount], ids=["csv", "beancount"])
def test_exports_stream_in_bounded_memory(exporter) -> None:  # type: ignore[no-untyped-def]
    """30,000 transfers exported with a peak far below what holding them would take.

    Merely listing the transfers takes about 9 MB here (and the output text
    2.5-5 MB more); the streaming exports peak near 0.15 MB (CSV) and 0.6 MB
    (Beancount, which looks account names up per page of 1,000 transfers).
    """
    count = 30_000
    store = _SyntheticStore(count)
    sink = _CountingSink()
    tracemalloc.start()
    try:
        summary = exporter(store, sink)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.transfers == count
    assert sink.chars > count * 40  # it really wrote every transfer
    assert peak < 2_000_000, peak


def test_export_crosses_store_pages(ledger: Ledger) -> None:
    """More transfers than one read page: paging and per-page account lookups interleave."""
    count = page_rows_max + 50
    results = ledger.create_accounts(
        [
            NewAccount(1, "USD", "processor_clearing"),
            NewAccount(2, "USD", "merchant_revenue"),
        ]
    )
    assert {r.status for r in results} == {AccountStatus.ok}
    for start in range(0, count, batch_transfers_max):
        batch = [
            Transfer(100 + i, 1, 2, 1 + i % 997, "USD")
            for i in range(start, min(start + batch_transfers_max, count))
        ]
        assert all(r.ok for r in ledger.submit(batch))
    rows = csv_rows(ledger)
    assert [int(r["id"]) for r in rows] == list(range(100, 100 + count))
    out = io.StringIO()
    summary = export_beancount(ledger.store, out)
    assert summary.transfers == count
    text = out.getvalue()
    assert text.count(" * ") == count
    total = sum(1 + i % 997 for i in range(count))
    assert f"balance Income:Micropay:MerchantRevenue:A2  {beancount_number(-total)} ~ 0 USD" in text
    assert (
        f"balance Assets:Micropay:ProcessorClearing:A1  {beancount_number(total)} ~ 0 USD" in text
    )
