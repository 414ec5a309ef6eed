"""The double-spend race over HTTP, against a real ``micropay serve`` on loopback.

A wallet that can afford exactly 10 purchases; 64 concurrent purchases (of 64
different items, each with its own idempotency key) released together:
exactly 10 succeed, the rest are refused with 402, no 5xx, and reconcile is
clean. Repeated for a few rounds with the same server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from micropay.api.admin import create_key
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.store.migrate import upgrade

CALLERS = 64
AFFORDABLE = 10
ROUNDS = int(os.environ.get("MICROPAY_HTTP_RACE_ROUNDS", "3"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(
    base: str, method: str, path: str, key: str, body: object = None, idem: str | None = None
) -> tuple[int, dict]:  # type: ignore[type-arg]
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    if idem:
        request.add_header("Idempotency-Key", idem)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def server(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    upgrade(database_url)
    operator = create_key(database_url, "operator", "test")
    port = _free_port()
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "micropay.cli.main",
            "serve",
            "--database-url",
            database_url,
            "--port",
            str(port),
            "--threads",
            "32",
            "--signing-key-file",
            str(tmp_path / "signing.pem"),
        ],
        stdout=subprocess.DEVNULL,
        # A file, not a pipe: the server logs a JSON line per request, and a
        # pipe nobody reads would fill and block it.
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"micropay serve did not start: {log_path.read_text()[-2000:]!r}"
                ) from None
            time.sleep(0.1)
    try:
        yield base, operator
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        if process.stderr is not None:
            process.stderr.close()


def test_64_concurrent_purchases_on_a_wallet_for_10(server, database_url) -> None:  # type: ignore[no-untyped-def]
    base, operator = server
    for round_no in range(ROUNDS):
        status, created = _call(
            base,
            "POST",
            "/v1/merchants",
            operator,
            {"name": f"Shop {round_no}", "currency": "USD", "funding_policy": ["wallet"]},
            idem=f"m{round_no}",
        )
        assert status == 201, created
        key = created["secret_key"]["token"]
        status, customer = _call(
            base, "POST", "/v1/customers", key, {"payment_method_token": "pm_ok"}, idem="c"
        )
        assert status == 201, customer
        for n in range(CALLERS):
            status, _ = _call(
                base, "PUT", f"/v1/items/i{n}", key, {"name": "Article", "price_micros": 500_000}
            )
            assert status == 200
        status, topup = _call(
            base,
            "POST",
            f"/v1/customers/{customer['id']}/top-ups",
            key,
            {"amount_micros": 5_000_000},
            idem="t",
        )
        assert status == 201, topup
        barrier = threading.Barrier(CALLERS)
        statuses: list[int] = []
        lock = threading.Lock()

        def buy(
            n: int,
            key: str = key,
            customer_id: str = customer["id"],
            barrier: threading.Barrier = barrier,
            lock: threading.Lock = lock,
            statuses: list[int] = statuses,
        ) -> None:
            barrier.wait(timeout=30)
            status, _ = _call(
                base,
                "POST",
                "/v1/purchases",
                key,
                {"customer": customer_id, "item": f"i{n}"},
                idem=f"p{n}",
            )
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=buy, args=(n,)) for n in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(statuses) == CALLERS
        assert statuses.count(201) == AFFORDABLE, sorted(statuses)
        assert statuses.count(402) == CALLERS - AFFORDABLE, sorted(statuses)
        assert not [s for s in statuses if s >= 500]
    store = open_store(database_url)
    try:
        report = reconcile(store)
        assert report.ok, report.violations
    finally:
        store.close()
