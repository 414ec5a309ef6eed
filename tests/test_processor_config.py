"""Choosing the card processor: settings, refusals, and serve/worker over Stripe for real.

- ``processor_from_options``/``processor_from_env``: simulated by default; Stripe from
  ``STRIPE_API_KEY`` (its prefix gives the mode), ``STRIPE_WEBHOOK_SECRET`` where events
  come in, ``STRIPE_API_BASE``; bad settings are refused with a message that names the
  setting and never echoes a secret.
- ``micropay serve``/``micropay worker``: a bad setting exits 2 with one line, no traceback.
- A process serves its processor's mode: the API refuses keys of the other mode, the
  worker refuses a database holding merchants of the other mode.
- Against localstripe, without mocks: ``micropay serve --processor stripe`` as a child
  process tops up a wallet over HTTP (the PaymentIntent exists at localstripe, the ledger
  agrees, signed events verify), and its log never shows the key; ``micropay worker
  --processor stripe --once`` completes a charge whose answer was lost, with one
  PaymentIntent in the end.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from click.testing import CliRunner
from fastapi.testclient import TestClient

from localstripe_server import TEST_API_KEY, running_localstripe
from micropay.api import ApiConfig, create_app
from micropay.api.admin import create_key
from micropay.cli.main import main
from micropay.core.accounts import credit_balance_micros
from micropay.payments import chart
from micropay.payments.models import TopUpStatus
from micropay.processors.config import (
    ProcessorConfigError,
    processor_from_env,
    processor_from_options,
)
from micropay.processors.simulated import SimulatedProcessor
from micropay.processors.stripe import StripeProcessor
from micropay.service.payments import Payments
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.store.migrate import upgrade
from test_stripe_adapter import FaultProxy, saved_card, sign

WEBHOOK_SECRET = "whsec_processor_config_test"
STRIPE_ENV = ("MICROPAY_PROCESSOR", "STRIPE_API_KEY", "STRIPE_API_BASE", "STRIPE_WEBHOOK_SECRET")


def secret_key(mode: str = "test") -> str:
    """A distinctive key per use, so a leak of it into a log or message can be found."""
    return f"sk_{mode}_{secrets.token_hex(16)}"


# --- settings -----------------------------------------------------------------------------


def test_the_default_is_the_simulated_processor_in_test_mode() -> None:
    for configured in (processor_from_env({}), processor_from_options(None)):
        assert (configured.kind, configured.mode) == ("simulated", "test")
        assert isinstance(configured.processor, SimulatedProcessor)
    assert processor_from_env({"MICROPAY_PROCESSOR": "Simulated"}).kind == "simulated"


def test_stripe_takes_its_mode_from_the_key_and_never_shows_it() -> None:
    key = secret_key("live")
    env = {
        "MICROPAY_PROCESSOR": "stripe",
        "STRIPE_API_KEY": key,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    configured = processor_from_env(env)
    try:
        assert (configured.kind, configured.mode) == ("stripe", "live")
        assert isinstance(configured.processor, StripeProcessor)
        shown = f"{configured!r} {configured.describe()} {configured.processor!r}"
        assert key not in shown
        assert WEBHOOK_SECRET not in shown
    finally:
        configured.close()
    for key, mode in ((secret_key("test"), "test"), ("rk_live_" + "a" * 24, "live")):
        made = processor_from_options("stripe", api_key=key, webhook_secret=WEBHOOK_SECRET)
        assert made.mode == mode
        made.close()
    # The explicit kind wins over the environment's.
    assert processor_from_env(env | {"STRIPE_API_KEY": ""}, kind="simulated").kind == "simulated"


def test_the_webhook_secret_is_needed_only_where_events_come_in() -> None:
    key = secret_key()
    with pytest.raises(ProcessorConfigError, match="STRIPE_WEBHOOK_SECRET"):
        processor_from_options("stripe", api_key=key)
    worker_side = processor_from_options("stripe", api_key=key, events=False)
    try:
        # Its secret is random: no event signed with any secret we know verifies.
        payload = b'{"id": "evt_1", "object": "event"}'
        from micropay.payments.processor import EventRejected

        with pytest.raises(EventRejected):
            worker_side.processor.verify_event(payload, sign(payload, 100, WEBHOOK_SECRET), 100)
    finally:
        worker_side.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "paypal"}, "unknown processor 'paypal'"),
        ({"kind": "stripe"}, "needs STRIPE_API_KEY"),
        ({"kind": "stripe", "api_key": "pk_live_" + "b" * 24}, "publishable key cannot charge"),
        ({"kind": "stripe", "api_key": "sk_prod_" + "c" * 24}, "not a Stripe secret key"),
        ({"kind": "stripe", "api_key": "4242424242424242"}, "not a Stripe secret key"),
        (
            {"kind": "stripe", "api_key": "sk_test_" + "d" * 24, "webhook_secret": "sk_x_123456"},
            "STRIPE_WEBHOOK_SECRET is not",
        ),
        (
            {"kind": "stripe", "api_key": "sk_live_" + "e" * 24, "api_base": "http://stripe.test"},
            "only sent over https",
        ),
        (
            {"kind": "stripe", "api_key": "sk_test_" + "f" * 24, "api_base": "ftp://x"},
            "must be an http",
        ),
        (
            {"kind": "stripe", "api_key": "sk_test_" + "g" * 24, "api_base": "https://u:p@x"},
            "plain URL",
        ),
        ({"kind": "simulated", "api_key": "sk_live_" + "h" * 24}, "moves no money"),
        ({"kind": "simulated", "api_key": "sk_test_" + "i" * 24}, "moves no money"),
    ],
)
def test_bad_settings_are_refused_without_echoing_secrets(
    options: dict[str, Any], message: str
) -> None:
    kind = options.pop("kind")
    options.setdefault("webhook_secret", WEBHOOK_SECRET)
    with pytest.raises(ProcessorConfigError, match=message) as refused:
        processor_from_options(kind, **options)
    for name in ("api_key", "webhook_secret"):
        if options.get(name):
            assert options[name] not in str(refused.value)


def _cli(*args: str, **env: str) -> Any:
    """Run the CLI in-process with only the given processor settings in the environment."""
    cleared: dict[str, str | None] = dict.fromkeys(STRIPE_ENV)
    return CliRunner().invoke(main, list(args), env={**cleared, **env})


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_cli_exits_2_with_a_clear_message_on_bad_settings(command: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    key = secret_key()
    cases = [
        ((command, "--processor", "stripe"), {}, "needs STRIPE_API_KEY"),
        ((command,), {"MICROPAY_PROCESSOR": "stripe"}, "needs STRIPE_API_KEY"),
        ((command,), {"MICROPAY_PROCESSOR": "paypal"}, "'paypal' is not one of"),
        ((command,), {"STRIPE_API_KEY": key}, "moves no money"),
        (
            (command, "--processor", "stripe"),
            {"STRIPE_API_KEY": "pk_test_" + "x" * 24},
            "publishable key",
        ),
    ]
    for args, env, message in cases:
        result = _cli(*args, "--database-url", url, **env)
        assert result.exit_code == 2, (args, env, result.output)
        assert message in result.output
        assert "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)
        assert key not in result.output
    assert not (tmp_path / "cli.db").exists()  # refused before touching the database


# --- one mode per process -----------------------------------------------------------------


def test_the_api_refuses_keys_of_the_other_mode_than_its_processor(database_url: str) -> None:
    upgrade(database_url)
    test_key = create_key(database_url, "operator", "test")
    live_key = create_key(database_url, "operator", "live")
    body = {"name": "Shop", "currency": "USD", "funding_policy": ["wallet"]}

    def create_merchant(served: str | None, key: str, idem: str, mode: str = "") -> Any:
        config = ApiConfig(database_url, processor=SimulatedProcessor(), processor_mode=served)
        with TestClient(create_app(config)) as client:
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idem}
            sent = {**body, "mode": mode or (served or "test")}
            return client.post("/v1/merchants", json=sent, headers=headers)

    refused = create_merchant("test", live_key, "a")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "mode_mismatch"
    assert create_merchant("live", test_key, "b").status_code == 403
    assert create_merchant("test", test_key, "c").status_code == 201
    assert create_merchant("live", live_key, "d").status_code == 201
    assert create_merchant(None, live_key, "e").status_code == 201  # no processor mode: no check
    # A server creates merchants of its own mode only: its worker charges them all.
    other = create_merchant("test", test_key, "f", mode="live")
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "mode_mismatch"


def test_the_worker_refuses_a_database_with_merchants_of_the_other_mode(
    database_url: str,
) -> None:
    upgrade(database_url)
    ran = _cli("worker", "--once", "--jobs", "expire_holds", "--database-url", database_url)
    assert ran.exit_code == 0, ran.output
    operator = create_key(database_url, "operator", "test")
    config = ApiConfig(database_url, processor=SimulatedProcessor())
    with TestClient(create_app(config)) as client:
        made = client.post(
            "/v1/merchants",
            json={"name": "Live shop", "currency": "USD", "mode": "live"},
            headers={"Authorization": f"Bearer {operator}", "Idempotency-Key": "m"},
        )
        assert made.status_code == 201, made.text
    refused = _cli("worker", "--once", "--database-url", database_url)
    assert refused.exit_code == 2, refused.output
    assert "1 live-mode merchant(s)" in refused.output
    assert "Traceback" not in refused.output
    live = _cli(
        "worker",
        "--once",
        "--jobs",
        "run_due_charges",
        "--processor",
        "stripe",
        "--database-url",
        database_url,
        STRIPE_API_KEY=secret_key("live"),
        STRIPE_API_BASE="https://127.0.0.1:9",
    )
    assert live.exit_code == 0, live.output  # a live key may run this database's jobs
    assert "1 job(s) run" in live.output


# --- serve and worker over localstripe ------------------------------------------------------


@pytest.fixture(scope="module")
def stripe_url() -> Iterator[str]:
    with running_localstripe() as url:
        yield url


@pytest.fixture(scope="module")
def browser(stripe_url: str) -> Iterator[stripe.StripeClient]:
    """Stands for Stripe.js: creates customers and cards directly at localstripe."""
    http_client = stripe.RequestsClient(timeout=10)
    yield stripe.StripeClient(
        TEST_API_KEY, base_addresses={"api": stripe_url}, http_client=http_client
    )
    http_client.close()  # type: ignore[no-untyped-call]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(
    base: str,
    method: str,
    path: str,
    key: str = "",
    body: object = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _cli_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STRIPE_ENV}
    return {**env, **settings}


class Server:
    """``micropay serve`` as a child process, its log in a file."""

    def __init__(self, database_url: str, tmp_path: Path, env: dict[str, str]) -> None:
        self.log_path = tmp_path / "serve.log"
        self._log = self.log_path.open("w")
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "micropay.cli.main",
                "serve",
                "--processor",
                "stripe",
                "--database-url",
                database_url,
                "--port",
                str(port),
                "--threads",
                "4",
                "--signing-key-file",
                str(tmp_path / "signing.pem"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,  # a file, never a pipe nobody reads
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"serve did not start: {self.log()[-2000:]!r}") from None
                time.sleep(0.1)  # polling a server that is starting: no event to wait on

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


def _intents(browser: stripe.StripeClient, customers: set[str]) -> dict[str, tuple[int, str]]:
    """localstripe's succeeded PaymentIntents of these customers: id -> (minor, currency)."""
    listed = browser.v1.payment_intents.list({"limit": 100})
    assert not listed.has_more, "more PaymentIntents than one page"
    return {
        i.id: (i.amount, i.currency.upper())
        for i in listed.data
        if i.customer in customers and i.status == "succeeded"
    }


def test_serve_with_stripe_tops_up_over_http_against_localstripe(  # type: ignore[no-untyped-def]
    database_url, tmp_path, stripe_url, browser
) -> None:
    key = secret_key()
    upgrade(database_url)
    operator = create_key(database_url, "operator", "test")
    live_operator = create_key(database_url, "operator", "live")
    env = _cli_env(
        STRIPE_API_KEY=key, STRIPE_API_BASE=stripe_url, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET
    )
    server = Server(database_url, tmp_path, env)
    try:
        base = server.base
        status, made = _call(
            base,
            "POST",
            "/v1/merchants",
            operator,
            {"name": "Shop", "currency": "USD", "funding_policy": ["wallet"]},
            {"Idempotency-Key": "m"},
        )
        assert status == 201, made
        merchant_key = made["secret_key"]["token"]
        stripe_customer, method = saved_card(browser)
        status, customer = _call(
            base,
            "POST",
            "/v1/customers",
            merchant_key,
            {"payment_method_token": method, "processor_customer_token": stripe_customer},
            {"Idempotency-Key": "c"},
        )
        assert status == 201, customer
        status, topup = _call(
            base,
            "POST",
            f"/v1/customers/{customer['id']}/top-ups",
            merchant_key,
            {"amount_micros": 12_340_000},
            {"Idempotency-Key": "t"},
        )
        assert status == 201, topup
        assert topup["status"] == "ok"

        # The charge exists at localstripe, and our books agree with its books.
        [(intent_id, (amount, currency))] = _intents(browser, {stripe_customer}).items()
        assert (amount, currency) == (1234, "USD")
        store: Any = open_store(database_url)
        try:
            assert reconcile_processor(store, {intent_id: (amount, currency)}) == []
            assert len(reconcile_processor(store, {})) == 1  # the oracle has teeth
            assert reconcile(store).ok
        finally:
            store.close()

        # Stripe's signed events verify with STRIPE_WEBHOOK_SECRET, and only with it.
        intent = browser.v1.payment_intents.retrieve(intent_id).to_dict()
        now_s = int(time.time())
        payload = json.dumps(
            {
                "id": "evt_processor_config_1",
                "object": "event",
                "type": "payment_intent.succeeded",
                "created": now_s,
                "livemode": False,
                "data": {"object": intent},
            }
        ).encode()
        status, forged = _call(
            base,
            "POST",
            "/v1/processor-events",
            raw=payload,
            headers={"Stripe-Signature": sign(payload, now_s, "whsec_someone_else")},
        )
        assert (status, forged["error"]["code"]) == (401, "event_signature_invalid")
        status, event = _call(
            base,
            "POST",
            "/v1/processor-events",
            raw=payload,
            headers={"Stripe-Signature": sign(payload, now_s, WEBHOOK_SECRET)},
        )
        assert status == 200, event  # verified; the charge is already ours, so nothing to do
        assert (event["event_id"], event["status"]) == ("evt_processor_config_1", "ignored")

        # A test-mode Stripe key serves test keys only.
        status, refused = _call(
            base,
            "POST",
            "/v1/merchants",
            live_operator,
            {"name": "Live", "currency": "USD", "funding_policy": ["wallet"]},
            {"Idempotency-Key": "l"},
        )
        assert (status, refused["error"]["code"]) == (403, "mode_mismatch")
    finally:
        server.stop()
    log = server.log()
    assert "processor stripe (test mode)" in log
    # The log holds the requests and the Stripe calls they made, and no secret.
    assert "POST /v1/customers/{customer_id}/top-ups 201" in log
    assert "Request to Stripe api" in log
    assert key not in log
    assert key.removeprefix("sk_test_") not in log
    assert WEBHOOK_SECRET not in log


def test_the_worker_with_stripe_completes_a_lost_charge_against_localstripe(  # type: ignore[no-untyped-def]
    store, database_url, stripe_url, browser
) -> None:
    key = secret_key()
    stripe_customer, method = saved_card(browser)
    # A top-up whose answer is lost after localstripe charged, made five minutes ago: due now.
    proxy = FaultProxy(stripe_url, "reset")
    lossy = StripeProcessor(key, proxy.url, webhook_secret=WEBHOOK_SECRET, timeout_s=1.0)
    started_us = time.time_ns() // 1_000 - 300 * 1_000_000
    try:
        payments = Payments(store, lossy, clock=lambda: started_us)
        reader = payments.create_customer(
            "USD", processor_customer_token=stripe_customer, payment_method_token=method
        )
        lost = payments.top_up(reader.id, 25_000_000, "reader-topup-1")
    finally:
        lossy.close()
        proxy.close()
    assert lost.status is TopUpStatus.charge_pending
    assert len(_intents(browser, {stripe_customer})) == 1  # charged; we do not know it yet
    wallet = chart.wallet_account(reader.id, "USD")

    def balance() -> int:
        return credit_balance_micros(payments.ledger.accounts([wallet])[wallet])

    assert balance() == 0

    env = _cli_env(MICROPAY_PROCESSOR="stripe", STRIPE_API_KEY=key, STRIPE_API_BASE=stripe_url)
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "micropay.cli.main",
            "worker",
            "--once",
            "--jobs",
            "run_due_charges",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "done       run_due_charges" in ran.stdout
    assert key not in ran.stdout + ran.stderr

    # The same idempotency key: localstripe replayed its answer, no second charge.
    intents = _intents(browser, {stripe_customer})
    assert list(intents.values()) == [(2500, "USD")]
    assert balance() == 25_000_000
    assert reconcile_processor(store, intents) == []
    assert reconcile(store).ok
