"""``micropay demo``: a month on a fresh SQLite file, reconciled, then served with working keys."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.store import open_store
from micropay.store.migrate import upgrade

# The command the README runs (``micropay demo``), through the CLI's entry module so
# that it runs without the console script on PATH too.
DEMO = [sys.executable, "-m", "micropay.cli.main", "demo"]
SECRET = re.compile(r"secret key of The Daily Byte:\s+(mp_sk_test_[0-9a-f]{64})")
OPERATOR = re.compile(r"operator key:\s+(mp_op_test_[0-9a-f]{64})")
CUSTOMERS = re.compile(r"its customers include (cus_[0-9a-f]{16})")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _demo(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, "--database-url", url, *args],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def built(tmp_path: Path) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    done = _demo(tmp_path, url, "--no-serve", "--customers", "12", "--seed", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    return url, done.stdout


def test_the_month_covers_all_three_models_and_reconciles(
    built: tuple[str, str], tmp_path: Path
) -> None:
    url, out = built
    assert re.search(r"reconcile: \d+ accounts checked: clean", out), out
    assert "FAIL" not in out
    with sqlite3.connect(tmp_path / "demo.db") as db:
        by_funding = dict(
            db.execute("SELECT funding, count(*) FROM purchases GROUP BY funding").fetchall()
        )
        charges = dict(
            db.execute(
                "SELECT purpose, count(*) FROM charges WHERE status = 'succeeded' GROUP BY purpose"
            ).fetchall()
        )
        splits = db.execute("SELECT count(*) FROM sale_shares").fetchone()[0]
    assert by_funding.get("wallet", 0) > 0
    assert by_funding.get("tab", 0) > 0
    assert by_funding.get("direct", 0) > 0
    assert charges.get("topup", 0) > 0  # wallets were loaded by card
    assert charges.get("tab", 0) > 0  # tabs settled (the month end closes their period)
    assert splits > 0  # the music store's sales were split between payees
    # The ledger's own check, by the CLI, agrees.
    check = subprocess.run(
        [sys.executable, "-m", "micropay.cli.main", "reconcile", "--database-url", url],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.postgres
def test_the_demo_runs_on_postgresql(
    new_database_url: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database_url("postgres")  # skips without a server (fails in CI)
    done = _demo(tmp_path, url, "--no-serve", "--customers", "6")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"reconcile: \d+ accounts checked: clean", done.stdout), done.stdout
    assert "by direct" in done.stdout
    again = _demo(tmp_path, url, "--no-serve")
    assert "reusing the demo" in again.stdout, again.stdout + again.stderr


def test_a_rerun_reuses_the_demo_with_new_keys(built: tuple[str, str], tmp_path: Path) -> None:
    url, first = built
    again = _demo(tmp_path, url, "--no-serve")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing the demo" in again.stdout
    first_key, second_key = SECRET.search(first), SECRET.search(again.stdout)
    assert first_key is not None
    assert second_key is not None
    assert first_key[1] != second_key[1]
    with sqlite3.connect(tmp_path / "demo.db") as db:
        assert db.execute("SELECT count(*) FROM merchants").fetchone()[0] == 3
    fresh = _demo(tmp_path, url, "--no-serve", "--reset", "--customers", "3")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "building the demo platform" in fresh.stdout
    # A build stopped half-way (no operator key yet: it is made last) is built anew.
    with sqlite3.connect(tmp_path / "demo.db") as db:
        db.execute("DELETE FROM api_keys WHERE merchant_id IS NULL")
    unfinished = _demo(tmp_path, url, "--no-serve", "--customers", "2")
    assert unfinished.returncode == 0, unfinished.stdout + unfinished.stderr
    assert "not finished" in unfinished.stdout
    assert "building the demo platform" in unfinished.stdout
    with sqlite3.connect(tmp_path / "demo.db") as db:
        assert db.execute("SELECT count(*) FROM customers").fetchone()[0] == 2


def test_a_database_with_other_data_is_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    upgrade(url)
    store: Any = open_store(url)
    try:
        Payments(store, SimulatedProcessor()).create_merchant("A real shop", "USD")
    finally:
        store.close()
    refused = _demo(tmp_path, url, "--no-serve")
    assert refused.returncode == 1
    assert "not a micropay demo" in refused.stderr
    with sqlite3.connect(tmp_path / "shop.db") as db:
        assert db.execute("SELECT name FROM merchants").fetchall() == [("A real shop",)]


def test_the_served_demo_answers_with_the_printed_keys(
    built: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = built
    port = _free_port()
    server = subprocess.Popen(
        [*DEMO, "--database-url", url, "--port", str(port)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    printed: list[str] = []
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            assert line, "the demo exited early:\n" + "".join(printed)
            printed.append(line)
            if "Uvicorn running" in line:
                break
        out = "".join(printed)
        secret, operator = SECRET.search(out), OPERATOR.search(out)
        customer = CUSTOMERS.search(out)
        assert secret is not None, out
        assert operator is not None, out
        assert customer is not None, out
        assert f"{base}/docs" in out
        assert f"curl -s {base}/v1/customers" in out

        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            auth = {"Authorization": f"Bearer {secret[1]}"}
            listed = http.get("/v1/customers", headers=auth, params={"limit": 100})
            assert listed.status_code == 200, listed.text
            assert customer[1] in [c["id"] for c in listed.json()["data"]]
            bought = http.post(
                "/v1/purchases",
                headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
                json={"customer": customer[1], "item": "day-pass"},
            )
            assert bought.status_code in (200, 201), bought.text
            assert bought.json()["status"] in ("ok", "already_entitled")
            made = http.post(
                "/v1/merchants",
                headers={
                    "Authorization": f"Bearer {operator[1]}",
                    "Idempotency-Key": uuid.uuid4().hex,
                },
                json={"name": "My Shop", "currency": "USD", "mode": "test"},
            )
            assert made.status_code == 201, made.text
            metrics = http.get("/metrics", headers={"Authorization": f"Bearer {operator[1]}"})
            assert metrics.status_code == 200
            assert 'route="/v1/purchases"' in metrics.text
    finally:
        server.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()
    assert server.returncode == 0
