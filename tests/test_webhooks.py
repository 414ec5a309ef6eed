"""Webhooks out: the outbox, signed at-least-once delivery, the delivery log, SSRF checks.

A local receiver (``http.server`` in a thread on 127.0.0.1, reachable only
through the test-mode switch ``allow_private_in_test``) follows a script per
request: answer 500, stall past the dispatcher's timeout, reset the
connection, answer 410, hold the request until released, or answer 200.
Every body that reached it is verified with the Standard Webhooks reference
library (``standardwebhooks``).

Also run as a subprocess by these tests: ``python tests/test_webhooks.py dispatch URL``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from micropay.payments.models import FundingSource, PurchaseStatus, TopUpStatus
from micropay.processors.simulated import DECLINING_PAYMENT_METHOD, SimulatedProcessor
from micropay.service.payments import Payments
from micropay.service.reconcile import reconcile
from micropay.service.refunds import RefundStatus
from micropay.store import open_store
from micropay.webhooks import EndpointRefusal, UrlRefusal, Webhooks, attach, check_url
from micropay.webhooks.delivery import register_webhook_jobs
from micropay.webhooks.outbox import webhooks_tx
from micropay.webhooks.signing import sign_headers
from micropay.worker import Registry, Worker

WALLET_ONLY = (FundingSource.wallet,)
TAB_FIRST = (FundingSource.wallet, FundingSource.tab)
stall_release_s = 10.0
subprocess_timeout_s = 60.0


def usd(cents: int) -> int:
    return cents * 10_000


# --- the receiver ------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers by script (one mode per request, then ``ok``); records every full request."""

    script: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    got_request: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    modes_seen: list[str] = field(default_factory=list)

    def next_mode(self) -> str:
        with self.lock:
            mode = self.script.pop(0) if self.script else "ok"
            self.modes_seen.append(mode)
            return mode


def start_receiver(receiver: Receiver) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            mode = receiver.next_mode()
            with receiver.lock:
                receiver.received.append(Received(dict(self.headers.items()), body))
            receiver.got_request.set()
            if mode in ("stall", "hold"):
                receiver.release.wait(stall_release_s)
                if mode == "stall":
                    return  # the dispatcher has given up long ago
            if mode == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()
                return
            status = {"500": 500, "410": 410}.get(mode, 200)
            try:
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                self.close_connection = True  # the dispatcher is gone (killed or timed out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    box = Receiver()
    server, thread = start_receiver(box)
    yield box, f"http://127.0.0.1:{server.server_address[1]}/hooks"
    box.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def verified_ids(receiver: Receiver, secret: str) -> list[str]:
    """The webhook-id of every request, each signature checked by the reference library."""
    ids = []
    for got in receiver.received:
        payload = Webhook(secret).verify(got.body, got.headers)
        assert payload["type"]
        assert payload["data"]
        ids.append(got.headers["webhook-id"])
    return ids


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def processor() -> SimulatedProcessor:
    return SimulatedProcessor()


@pytest.fixture
def payments(store, processor, clock) -> Payments:  # type: ignore[no-untyped-def]
    payments = Payments(store, processor, clock=clock)
    attach(payments)
    return payments


def hooks(store: Any, clock: Any, **options: Any) -> Webhooks:
    options.setdefault("allow_private_in_test", True)
    options.setdefault("total_timeout_s", 0.5)
    return Webhooks(store, clock=clock, **options)


def events(store: Any) -> list[Any]:
    with store.write() as tx:
        return webhooks_tx(tx).list_webhook_events(None, 1_000)


def shop_with_reader(payments: Payments, funding: tuple[FundingSource, ...] = WALLET_ONLY) -> Any:
    shop = payments.create_merchant("The Daily Byte", "USD", funding_policy=funding)
    alice = payments.create_customer(
        "USD", processor_customer_token="cus_a", payment_method_token="pm_a"
    )
    for n in range(10):
        payments.set_item(shop.id, f"a{n}", f"Article {n}", usd(10))
    return shop, alice


# --- SSRF --------------------------------------------------------------------------


def resolving_to(*addresses: str) -> Any:
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    ("url", "live", "allow", "resolver", "refusal"),
    [
        ("http://example.com/h", True, False, resolving_to("93.184.216.34"), "scheme_not_allowed"),
        ("https://127.0.0.1/h", True, True, None, "address_not_allowed"),  # never in live mode
        ("http://127.0.0.1:8080/h", False, False, None, "address_not_allowed"),
        ("https://10.1.2.3/h", True, False, None, "address_not_allowed"),
        ("https://172.16.0.1/h", True, False, None, "address_not_allowed"),
        ("https://192.168.1.1/h", True, False, None, "address_not_allowed"),
        ("https://169.254.169.254/latest/meta-data", True, False, None, "address_not_allowed"),
        ("https://[::1]/h", True, False, None, "address_not_allowed"),
        ("https://[::ffff:127.0.0.1]/h", True, False, None, "address_not_allowed"),
        ("https://[fe80::1]/h", True, False, None, "address_not_allowed"),
        ("https://[fc00::1]/h", True, False, None, "address_not_allowed"),
        ("https://224.0.0.1/h", True, False, None, "address_not_allowed"),
        ("https://0.0.0.0/h", True, False, None, "address_not_allowed"),
        ("https://240.0.0.1/h", True, False, None, "address_not_allowed"),
        ("https://100.64.0.1/h", True, False, None, "address_not_allowed"),
        # A name resolving to loopback, or to one public and one private address.
        ("https://evil.example/h", True, False, resolving_to("127.0.0.1"), "address_not_allowed"),
        (
            "https://mixed.example/h",
            True,
            False,
            resolving_to("93.184.216.34", "10.0.0.5"),
            "address_not_allowed",
        ),
        ("https://user:pw@example.com/h", True, False, None, "credentials_in_url"),
        ("ftp://example.com/h", False, False, None, "scheme_not_allowed"),
        ("https:///nohost", True, False, None, "url_invalid"),
        ("https://exa mple.com/", True, False, None, "url_invalid"),
        ("https://nohost.invalid/h", True, False, None, "host_unresolvable"),
        (12345, True, False, None, "url_invalid"),
    ],
)
def test_ssrf_vectors_are_refused(
    url: Any, live: bool, allow: bool, resolver: Any, refusal: str
) -> None:
    def unresolvable(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    check = check_url(url, live=live, allow_private=allow, resolver=resolver or unresolvable)
    assert check.refusal is UrlRefusal(refusal), check


def test_ssrf_real_dns_localhost_is_loopback_and_public_https_passes() -> None:
    assert check_url("https://localhost/h", live=True).refusal is UrlRefusal.address_not_allowed
    ok = check_url("https://hooks.example/a?b=1", live=True, resolver=resolving_to("93.184.216.34"))
    assert ok.ok
    assert (ok.host, ok.port, ok.target, ok.addresses) == (
        "hooks.example",
        443,
        "/a?b=1",
        ("93.184.216.34",),
    )
    # The test-mode switch lets a local receiver through, in test mode only, and never
    # opens the metadata service, multicast or unspecified addresses.
    assert check_url("http://127.0.0.1:9/h", live=False, allow_private=True).ok
    assert check_url("http://10.0.0.1:9/h", live=False, allow_private=True).ok
    for url in ("http://169.254.169.254/", "http://224.0.0.1/", "http://0.0.0.0/"):
        refused = check_url(url, live=False, allow_private=True)
        assert refused.refusal is UrlRefusal.address_not_allowed


def test_registration_refuses_and_writes_nothing(store, clock) -> None:  # type: ignore[no-untyped-def]
    hub = Webhooks(store, clock=clock, allow_private_in_test=True)
    for url in ("http://127.0.0.1:9/h", "https://10.0.0.1/", "https://169.254.169.254/"):
        result = hub.register_endpoint(1, url, live=True)
        assert (result.endpoint, result.refusal) == (None, EndpointRefusal.url_refused)
    strict = Webhooks(store, clock=clock)  # no switch: not even in test mode
    assert strict.register_endpoint(1, "http://[::1]:9/", live=False).refusal is (
        EndpointRefusal.url_refused
    )
    bad_events = hub.register_endpoint(1, "http://127.0.0.1:9/", live=False, events=("nope",))
    assert bad_events.refusal is EndpointRefusal.events_invalid
    with store.write() as tx:
        assert webhooks_tx(tx).list_webhook_endpoints(1) == []


def test_address_is_checked_again_at_delivery(payments, store, clock, receiver) -> None:  # type: ignore[no-untyped-def]
    """DNS changed after registration: the delivery is refused, logged and retried later."""
    box, url = receiver
    answers = [["127.0.0.1"]]  # registration: allowed (test mode)
    hub = hooks(store, clock, resolver=lambda host, port: answers[0])
    shop, alice = shop_with_reader(payments)
    endpoint = hub.register_endpoint(
        shop.id, url.replace("127.0.0.1", "hooks.test"), live=False
    ).endpoint
    assert endpoint is not None
    payments.top_up(alice.id, usd(500), "t1")
    assert payments.purchase(shop.id, alice.id, "a1", "k1").ok
    answers[0] = ["169.254.169.254"]  # rebinding to the metadata service
    [outcome] = hub.drain()
    assert outcome.state == "pending"
    assert outcome.error.startswith("refused: ")
    assert "link-local" in outcome.error
    assert box.received == []  # nothing was sent
    [attempt] = hub.attempts(outcome.delivery_id)
    assert (attempt.attempt, attempt.status_code) == (1, None)
    answers[0] = ["127.0.0.1"]
    clock.advance(60)
    assert [o.state for o in hub.drain()] == ["succeeded"]
    assert len(verified_ids(box, endpoint.secret)) == 1


# --- the outbox --------------------------------------------------------------------------


def test_every_committed_change_emits_one_event(payments, store, clock) -> None:  # type: ignore[no-untyped-def]
    """Top-up (succeeded, declined), purchases, a refund, a tab settled and a tab frozen."""
    shop, alice = shop_with_reader(payments, TAB_FIRST)
    payments.set_item(shop.id, "big", "Long read", usd(60))
    payments.set_item(shop.id, "more", "Another", usd(60))
    assert payments.top_up(alice.id, usd(500), "t1").status is TopUpStatus.ok
    paid = [payments.purchase(shop.id, alice.id, f"a{n}", f"k{n}") for n in range(2)]
    assert [r.funding for r in paid] == [FundingSource.wallet] * 2
    refund = payments.refunds.refund(paid[0].purchase_id, usd(10), "r1")
    assert refund.status is RefundStatus.ok
    # Bob has no wallet money: his tab fills up and is settled in one charge.
    bob = payments.create_customer(
        "USD", processor_customer_token="cus_b", payment_method_token="pm_b"
    )
    tabbed = [payments.purchase(shop.id, bob.id, ref, f"b{ref}") for ref in ("big", "more")]
    assert [(r.ok, r.funding) for r in tabbed] == [(True, FundingSource.tab)] * 2
    # Dave's card declines: his top-up fails and his tab freezes.
    dave = payments.create_customer(
        "USD", processor_customer_token="cus_d", payment_method_token=DECLINING_PAYMENT_METHOD
    )
    assert payments.top_up(dave.id, usd(500), "t2").status is TopUpStatus.charge_declined
    assert payments.purchase(shop.id, dave.id, "big", "d1").ok
    assert payments.purchase(shop.id, dave.id, "more", "d2").status is PurchaseStatus.tab_frozen

    got = events(store)
    types = [e.type for e in got]
    assert types.count("purchase.succeeded") == 2 + 2 + 1
    assert types.count("refund.succeeded") == 1
    assert types.count("topup.succeeded") == 1
    assert types.count("topup.declined") == 1
    assert types.count("tab.settled") == 1
    assert types.count("tab.frozen") == 1
    # Invariant 9 both ways: an event for each paid purchase, and each event's purchase is paid.
    with store.write() as tx:
        tx._cur.execute("SELECT id FROM purchases WHERE status = 'ok'")
        paid_ids = {int(r[0]) for r in tx._cur.fetchall()}
    assert {e.object_id for e in got if e.type == "purchase.succeeded"} == paid_ids
    assert all(e.merchant_id == shop.id for e in got if e.type.startswith(("purchase", "refund")))
    body = json.loads(next(e.payload for e in got if e.type == "topup.declined"))
    assert body["data"]["status"] == "declined"
    assert body["data"]["decline_code"]
    assert reconcile(store).ok


def test_rolled_back_purchase_leaves_no_event(payments, store, clock) -> None:  # type: ignore[no-untyped-def]
    shop, alice = shop_with_reader(payments)
    payments.top_up(alice.id, usd(500), "t1")

    def fail_after_outbox(tx: Any, purchase_id: int) -> None:
        raise RuntimeError("boom after the outbox row was written")

    payments.sale_hooks.append(fail_after_outbox)  # runs after the outbox's hook
    with pytest.raises(RuntimeError, match="boom"):
        payments.purchase(shop.id, alice.id, "a1", "k1")
    assert [e.type for e in events(store)] == ["topup.succeeded"]
    with store.write() as tx:
        tx._cur.execute("SELECT COUNT(*) FROM purchases")
        assert tx._cur.fetchall()[0][0] == 0
    payments.sale_hooks.remove(fail_after_outbox)
    assert payments.purchase(shop.id, alice.id, "a1", "k1").ok
    assert sorted(e.type for e in events(store)) == ["purchase.succeeded", "topup.succeeded"]
    assert reconcile(store).ok


# --- delivery -----------------------------------------------------------------------------


def test_receiver_fails_stalls_resets_then_recovers(payments, store, clock, receiver) -> None:  # type: ignore[no-untyped-def]
    box, url = receiver
    hub = hooks(store, clock)
    shop, alice = shop_with_reader(payments)
    endpoint = hub.register_endpoint(shop.id, url, live=False, events=("purchase.succeeded",))
    assert endpoint.endpoint is not None
    secret = endpoint.endpoint.secret
    assert secret.startswith("whsec_")
    payments.top_up(alice.id, usd(500), "t1")  # not subscribed: no delivery
    for n in range(4):
        assert payments.purchase(shop.id, alice.id, f"a{n}", f"k{n}").ok
    box.script[:] = ["500", "stall", "reset", "500", "stall", "reset"]

    states: list[list[str]] = []
    for _ in range(20):  # bounded: back-off doubles from 5 s; the clock jumps an hour a round
        outcomes = hub.drain()
        states.append(sorted(o.state for o in outcomes))
        if not hub.deliveries(state="pending"):
            break
        clock.advance(3_600)
    assert box.modes_seen[:6] == ["500", "stall", "reset", "500", "stall", "reset"]
    delivered = hub.deliveries(state="succeeded")
    assert len(delivered) == 4
    assert hub.deliveries(state="pending") == []
    ids = verified_ids(box, secret)
    purchase_events = {e.id for e in events(store) if e.type == "purchase.succeeded"}
    assert set(ids) == purchase_events  # none lost, nothing else
    assert len(ids) == 4 + 6  # each failure was retried with the same id
    # The delivery log: attempt numbers, status codes, latency and errors.
    logged = [a for d in delivered for a in hub.attempts(d.id)]
    assert len(logged) == 10
    assert sorted(a.status_code for a in logged if a.status_code) == [200] * 4 + [500] * 2
    errors = [a.error for a in logged if a.status_code is None]
    assert len(errors) == 4
    assert sum("timed out" in e for e in errors) == 2
    assert all(a.latency_us > 0 for a in logged)
    stalled = [a for a in logged if "timed out" in a.error]
    assert all(a.latency_us < 5_000_000 for a in stalled)  # bounded by the 0.5 s timeout
    for d in delivered:
        numbers = [a.attempt for a in hub.attempts(d.id)]
        assert numbers == list(range(1, len(numbers) + 1))
    # Tampering is detected by the reference library.
    got = box.received[-1]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body.replace(b"a", b"b", 1), got.headers)


def test_signature_matches_the_spec_by_hand() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    now = int(time.time())
    headers = sign_headers(secret, "msg_1", now, '{"a":1}')
    expected = hmac.new(b"k" * 24, f'msg_1.{now}.{{"a":1}}'.encode(), hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}


def test_gone_disables_the_endpoint_and_replay_sends_again(
    payments, store, clock, receiver
) -> None:  # type: ignore[no-untyped-def]
    box, url = receiver
    hub = hooks(store, clock)
    shop, alice = shop_with_reader(payments)
    endpoint = hub.register_endpoint(shop.id, url, live=False).endpoint
    assert endpoint is not None
    payments.top_up(alice.id, usd(500), "t1")
    assert payments.purchase(shop.id, alice.id, "a1", "k1").ok
    box.script[:] = ["410"]
    first = hub.drain()
    assert [o.state for o in first] == ["failed"]
    assert len(box.received) == 1
    after = hub.endpoint(endpoint.id)
    assert after is not None
    assert (after.enabled, after.disabled_reason) == (False, "410 Gone")
    # Further events to a disabled endpoint get no delivery; nothing more is sent.
    assert payments.purchase(shop.id, alice.id, "a2", "k2").ok
    clock.advance(3_600)
    assert hub.drain() == []
    assert len(box.received) == 1
    # The merchant fixes the receiver and re-enables; a manual replay sends the same event.
    assert hub.set_enabled(endpoint.id, True)
    assert hub.replay(first[0].delivery_id)
    assert not hub.replay(first[0].delivery_id)  # already pending again
    assert [o.state for o in hub.drain()] == ["succeeded"]
    assert verified_ids(box, endpoint.secret) == [first[0].event_id] * 2
    assert [a.status_code for a in hub.attempts(first[0].delivery_id)] == [410, 200]


def test_retries_stop_after_three_days(payments, store, clock, receiver) -> None:  # type: ignore[no-untyped-def]
    box, url = receiver
    hub = hooks(store, clock)
    shop, alice = shop_with_reader(payments)
    hub.register_endpoint(shop.id, url, live=False)
    payments.top_up(alice.id, usd(500), "t1")
    assert payments.purchase(shop.id, alice.id, "a1", "k1").ok
    box.script[:] = ["500"] * 1_000
    started = clock()
    for _ in range(200):
        hub.drain()
        if not hub.deliveries(state="pending"):
            break
        [pending] = hub.deliveries(state="pending")
        clock.now_us = max(clock.now_us, pending.next_attempt_at_us)
    [failed] = hub.deliveries(state="failed")
    assert failed.finished_at_us is not None
    assert failed.finished_at_us - started <= 3 * 86_400 * 1_000_000
    assert failed.finished_at_us - started >= 2 * 86_400 * 1_000_000  # it did keep trying
    delays = [
        b.attempted_at_us - a.attempted_at_us
        for a, b in zip(hub.attempts(failed.id), hub.attempts(failed.id)[1:], strict=False)
    ]
    assert delays[:4] == [5_000_000, 10_000_000, 20_000_000, 40_000_000]  # exponential
    assert max(delays) <= 6 * 3_600 * 1_000_000  # capped


def test_worker_job_delivers(payments, store, clock, receiver) -> None:  # type: ignore[no-untyped-def]
    box, url = receiver
    hub = hooks(store, clock)
    shop, alice = shop_with_reader(payments)
    endpoint = hub.register_endpoint(shop.id, url, live=False).endpoint
    assert endpoint is not None
    payments.top_up(alice.id, usd(500), "t1")
    assert payments.purchase(shop.id, alice.id, "a1", "k1").ok
    registry = Registry()
    register_webhook_jobs(registry, lambda: hub)
    outcomes = Worker(store, registry, clock=clock).tick()
    assert [(o.name, o.state) for o in outcomes] == [("deliver_webhooks", "done")]
    assert len(verified_ids(box, endpoint.secret)) == 1


# --- the dispatcher killed mid-run ------------------------------------------------------


def test_dispatcher_killed_mid_delivery_then_restarted(  # type: ignore[no-untyped-def]
    payments, store, clock, receiver, database_url
) -> None:
    """SIGKILL while a request is in flight: the restart sends it again with the same id."""
    box, url = receiver
    shop, alice = shop_with_reader(payments)
    hub = hooks(store, clock)
    endpoint = hub.register_endpoint(shop.id, url, live=False).endpoint
    assert endpoint is not None
    payments.top_up(alice.id, usd(500), "t1")
    for n in range(6):
        assert payments.purchase(shop.id, alice.id, f"a{n}", f"k{n}").ok
    expected = {e.id for e in events(store) if e.type == "purchase.succeeded"}
    assert len(expected) == 6  # the top-up's event is the platform's, not this merchant's
    kills = 0
    for round_ in range(3):
        box.script[:] = ["ok"] * 2 + ["hold"]  # the third request hangs until killed
        box.got_request.clear()
        seen = len(box.received)
        child = subprocess.Popen(
            [sys.executable, __file__, "dispatch", database_url, str(clock())],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + subprocess_timeout_s
            while (
                len(box.received) < seen + 3
                and child.poll() is None
                and time.monotonic() < deadline
            ):
                box.got_request.wait(0.5)
                box.got_request.clear()
            if len(box.received) < seen + 3:
                break  # fewer than 3 left: the child finished them
            child.send_signal(signal.SIGKILL)
            kills += 1
        finally:
            child.wait(subprocess_timeout_s)
        box.script[:] = []
        clock.advance(3_600 * (round_ + 1))  # past the dead dispatcher's lease
    assert kills >= 2
    hub.drain()
    assert hub.deliveries(state="pending") == []
    ids = verified_ids(box, endpoint.secret)
    assert set(ids) == expected  # none lost
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert len(duplicates) >= kills - 1  # a killed in-flight delivery came again, same id
    assert len(hub.deliveries(state="succeeded")) == 6
    assert reconcile(store).ok


def _child(mode: str, database_url: str, now_us: str) -> None:
    if mode != "dispatch":
        raise SystemExit(2)
    store: Any = open_store(database_url)
    try:
        hub = Webhooks(
            store, clock=lambda: int(now_us), allow_private_in_test=True, total_timeout_s=30.0
        )
        hub.drain()
    finally:
        store.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _child(sys.argv[1], sys.argv[2], sys.argv[3])
