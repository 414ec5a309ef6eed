"""The Stripe adapter against a real local fake Stripe server (localstripe), no mocks of Stripe.

What is proved here, each by a test that can fail:

- a charge succeeds and lands once at the processor; a declining card is
  ``declined`` and nothing is charged, however often it is retried;
- the same idempotency key twice gives the same charge and ONE PaymentIntent;
- a connection dropped or stalled *after* the processor charged gives
  ``retry``; retrying with the same key returns the same charge, and the
  processor holds exactly one charge (no double charge);
- 500/503/409 and 429 (with Retry-After) give ``retry`` and charge nothing;
- partial and full refunds; a refund beyond what is left is declined by the
  processor, and refunds are idempotent too;
- payouts (localstripe supports EUR payouts only; Transfers to connected
  accounts are not served by localstripe, see the module docstring of the adapter);
- signed events: valid, rotated secrets, tampered, wrong secret, stale,
  future-dated, missing and malformed headers, duplicates, and an event signed
  by localstripe itself.

Customers and payment methods are created directly at localstripe with the SDK,
as a browser would through Stripe.js: micropay never handles card numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import logging
import queue
import re
import socket
import struct
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe

from localstripe_server import TEST_API_KEY, running_localstripe
from micropay.payments.processor import (
    ChargeRequest,
    EventKind,
    EventRejected,
    Outcome,
    PayoutRequest,
    RefundRequest,
)
from micropay.processors.stripe import IdempotencyKeyReused, StripeProcessor

WEBHOOK_SECRET = "whsec_test_micropay"
CARD_OK = "4242424242424242"
CARD_DECLINED_ON_CHARGE = "4000000000000341"  # attaches fine, every charge is declined
proxy_io_timeout_s = 5.0


# --- localstripe, a setup client, adapters --------------------------------------------


@pytest.fixture(scope="module")
def stripe_url() -> Iterator[str]:
    with running_localstripe() as url:
        yield url


@pytest.fixture(scope="module")
def setup_client(stripe_url: str) -> Iterator[stripe.StripeClient]:
    """The 'browser': creates customers and card payment methods directly at localstripe."""
    http_client = stripe.RequestsClient(timeout=10)
    yield stripe.StripeClient(
        TEST_API_KEY, base_addresses={"api": stripe_url}, http_client=http_client
    )
    http_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def make_processor(stripe_url: str) -> Iterator[Callable[..., StripeProcessor]]:
    made: list[StripeProcessor] = []

    def make(api_base: str = stripe_url, **kwargs: Any) -> StripeProcessor:
        options: dict[str, Any] = {"webhook_secret": WEBHOOK_SECRET, "timeout_s": 3.0}
        options.update(kwargs)
        api_key = options.pop("api_key", TEST_API_KEY)
        processor = StripeProcessor(api_key, api_base, **options)
        made.append(processor)
        return processor

    yield make
    for processor in made:
        processor.close()


@pytest.fixture
def processor(make_processor: Callable[..., StripeProcessor]) -> StripeProcessor:
    return make_processor()


def saved_card(client: stripe.StripeClient, number: str = CARD_OK) -> tuple[str, str]:
    """A customer with an attached card: (customer token, payment method token)."""
    customer = client.v1.customers.create({})
    method = client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    client.v1.payment_methods.attach(method.id, {"customer": customer.id})
    return customer.id, method.id


def intents_of(client: stripe.StripeClient, customer: str) -> list[Any]:
    listed = client.v1.payment_intents.list({"limit": 100})
    assert not listed.has_more, "more PaymentIntents than one page; raise the limit"
    return [intent for intent in listed.data if intent.customer == customer]


def charges_of(client: stripe.StripeClient, customer: str) -> list[Any]:
    listed = client.v1.charges.list({"customer": customer, "limit": 100})
    return list(listed.data)


_key_counter = iter(range(1, 1_000_000))


def new_key(prefix: str = "mp") -> str:
    """Unique per run; no long digit runs, so the card-number check in logs has no false hits."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}-{next(_key_counter)}"


def charge_request(
    customer: str, method: str, amount_minor: int = 500, **kwargs: Any
) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=kwargs.pop("idempotency_key", new_key()),
        customer_token=customer,
        payment_method_token=method,
        amount_minor=amount_minor,
        currency=kwargs.pop("currency", "USD"),
        **kwargs,
    )


# --- charges -----------------------------------------------------------------------------


def test_charge_succeeds_once_at_the_processor(
    processor: StripeProcessor, setup_client: stripe.StripeClient
) -> None:
    customer, method = saved_card(setup_client)
    request = charge_request(customer, method, 1234, metadata={"order": "o-1"})

    result = processor.charge(request)

    assert result.outcome is Outcome.succeeded
    assert result.charge_id.startswith("pi_")
    assert result.amount_minor == 1234
    (intent,) = intents_of(setup_client, customer)
    assert intent.id == result.charge_id
    assert intent.status == "succeeded"
    assert intent.amount == 1234
    assert intent.currency == "usd"
    assert intent.metadata["order"] == "o-1"
    assert intent.metadata["micropay_idempotency_key"] == request.idempotency_key


def test_declined_card_is_declined_and_never_charged(
    processor: StripeProcessor,
    setup_client: stripe.StripeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    customer, method = saved_card(setup_client, CARD_DECLINED_ON_CHARGE)
    request = charge_request(customer, method, 700)
    caplog.clear()  # the "browser" above logged the card; from here on only the adapter runs

    first = processor.charge(request)
    again = processor.charge(request)  # a careless retry with the same key
    other = processor.charge(charge_request(customer, method, 700))  # a new attempt
    logged = "\n".join(record.getMessage() for record in caplog.records)

    for result in (first, again, other):
        assert result.outcome is Outcome.declined
        assert result.decline_code == "card_declined"
        assert result.amount_minor == 0
    assert again == first  # replayed, not re-attempted
    charges = charges_of(setup_client, customer)
    assert len(charges) == 2  # one per key: the replay made no attempt
    assert all(charge.status == "failed" for charge in charges)
    assert all(intent.status != "succeeded" for intent in intents_of(setup_client, customer))
    assert "stripe charge declined: card_declined" in logged  # the capture works
    assert not re.search(r"\d{13,19}", logged + first.message)
    assert TEST_API_KEY not in logged


def test_same_key_twice_is_one_payment_intent(
    processor: StripeProcessor, setup_client: stripe.StripeClient
) -> None:
    customer, method = saved_card(setup_client)
    request = charge_request(customer, method, 900)

    first = processor.charge(request)
    second = processor.charge(request)

    assert first.outcome is Outcome.succeeded
    assert second == first
    assert [intent.id for intent in intents_of(setup_client, customer)] == [first.charge_id]


def test_same_key_with_a_different_request_raises(
    processor: StripeProcessor, setup_client: stripe.StripeClient
) -> None:
    customer, method = saved_card(setup_client)
    request = charge_request(customer, method, 900)
    assert processor.charge(request).outcome is Outcome.succeeded

    changed = charge_request(customer, method, 901, idempotency_key=request.idempotency_key)
    with pytest.raises(IdempotencyKeyReused):
        processor.charge(changed)
    assert len(intents_of(setup_client, customer)) == 1


def test_unknown_customer_is_declined(processor: StripeProcessor) -> None:
    result = processor.charge(charge_request("cus_doesnotexist", "pm_doesnotexist"))
    assert result.outcome is Outcome.declined
    assert result.decline_code == "resource_missing"


def test_rejected_api_key_is_retry_and_not_echoed(
    make_processor: Callable[..., StripeProcessor], setup_client: stripe.StripeClient
) -> None:
    customer, method = saved_card(setup_client)
    bad = make_processor(api_key="xk_not_a_secret_key_1234")
    result = bad.charge(charge_request(customer, method))
    assert result.outcome is Outcome.retry
    assert "401" in result.message
    assert "xk_not_a_secret_key_1234" not in result.message
    assert intents_of(setup_client, customer) == []


# --- faults between the adapter and the processor ------------------------------------------


class FaultProxy:
    """A one-connection-at-a-time TCP proxy in front of localstripe that misbehaves on purpose.

    Modes:
    - ``reset``: forward the request, wait until localstripe starts answering (the
      charge happened), then reset the connection before any byte reaches the client.
    - ``stall``: the same, but hold the connection silently until the client gives up.
    - ``status:NNN``: answer NNN itself without forwarding (429 carries Retry-After: 7).
    """

    def __init__(self, upstream_url: str, mode: str) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.mode = mode
        self.upstream_answered = threading.Event()
        self.requests_seen = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=proxy_io_timeout_s * 2)
        self._listener.close()
        assert not self._thread.is_alive(), "fault proxy did not stop"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(proxy_io_timeout_s)
                with contextlib.suppress(OSError):
                    self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        request = _read_http_request(conn)
        self.requests_seen += 1
        if self.mode.startswith("status:"):
            conn.sendall(_canned_response(int(self.mode.split(":")[1])))
            return
        with socket.create_connection(self._upstream, timeout=proxy_io_timeout_s) as upstream:
            upstream.sendall(request)
            if upstream.recv(65536):
                self.upstream_answered.set()
        if self.mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self.mode == "stall":
            conn.recv(1)  # returns when the client closes after its own timeout (bounded)


def _read_http_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("client closed before sending a request")
        data += chunk
        if len(data) > 1 << 20:
            raise OSError("request head too large")
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("client closed mid-body")
        body += chunk
    return head + b"\r\n\r\n" + body


def _canned_response(status: int) -> bytes:
    reasons = {
        409: "Conflict",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }
    error_type = {409: "idempotency_error", 429: "invalid_request_error"}.get(status, "api_error")
    body = json.dumps({"error": {"type": error_type, "message": "injected fault"}}).encode()
    extra = "Retry-After: 7\r\n" if status == 429 else ""
    head = (
        f"HTTP/1.1 {status} {reasons[status]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
def fault_proxy(stripe_url: str) -> Iterator[Callable[[str], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(mode: str) -> FaultProxy:
        proxy = FaultProxy(stripe_url, mode)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.mark.parametrize("mode", ["reset", "stall"])
def test_lost_answer_after_the_charge_is_retry_and_never_a_double_charge(
    mode: str,
    processor: StripeProcessor,
    make_processor: Callable[..., StripeProcessor],
    fault_proxy: Callable[[str], FaultProxy],
    setup_client: stripe.StripeClient,
) -> None:
    customer, method = saved_card(setup_client)
    proxy = fault_proxy(mode)
    through_proxy = make_processor(proxy.url, timeout_s=1.0)
    request = charge_request(customer, method, 4321)

    lost = through_proxy.charge(request)

    assert lost.outcome is Outcome.retry
    assert lost.charge_id == ""
    assert proxy.upstream_answered.is_set()
    (charged,) = intents_of(setup_client, customer)  # the processor did charge
    assert charged.status == "succeeded"

    retried = processor.charge(request)  # a working path, the same key

    assert retried.outcome is Outcome.succeeded
    assert retried.charge_id == charged.id
    assert retried.amount_minor == 4321
    assert [intent.id for intent in intents_of(setup_client, customer)] == [charged.id]
    succeeded = [c for c in charges_of(setup_client, customer) if c.status == "succeeded"]
    assert [c.amount for c in succeeded] == [4321]


@pytest.mark.parametrize(
    ("status", "retry_after_s"), [(500, 0.0), (503, 0.0), (409, 0.0), (429, 7.0)]
)
def test_server_errors_and_rate_limits_are_retry(
    status: int,
    retry_after_s: float,
    processor: StripeProcessor,
    make_processor: Callable[..., StripeProcessor],
    fault_proxy: Callable[[str], FaultProxy],
    setup_client: stripe.StripeClient,
) -> None:
    customer, method = saved_card(setup_client)
    proxy = fault_proxy(f"status:{status}")
    request = charge_request(customer, method, 250)

    result = make_processor(proxy.url).charge(request)

    assert result.outcome is Outcome.retry
    assert result.retry_after_s == retry_after_s
    assert str(status) in result.message or status == 429
    assert proxy.requests_seen == 1  # max_network_retries=0: the adapter did not loop
    assert intents_of(setup_client, customer) == []
    assert processor.charge(request).outcome is Outcome.succeeded
    assert len(intents_of(setup_client, customer)) == 1


def test_sdk_retries_when_asked_and_still_charges_once(
    make_processor: Callable[..., StripeProcessor],
    fault_proxy: Callable[[str], FaultProxy],
    setup_client: stripe.StripeClient,
) -> None:
    customer, method = saved_card(setup_client)
    proxy = fault_proxy("reset")
    result = make_processor(proxy.url, max_network_retries=2).charge(
        charge_request(customer, method, 333)
    )
    assert result.outcome is Outcome.retry
    assert proxy.requests_seen == 3  # one try and two SDK retries, all with the same key
    assert len(intents_of(setup_client, customer)) == 1


# --- refunds -----------------------------------------------------------------------------


def test_partial_then_full_refund_then_nothing_left(
    processor: StripeProcessor, setup_client: stripe.StripeClient
) -> None:
    customer, method = saved_card(setup_client)
    charge = processor.charge(charge_request(customer, method, 1000))
    assert charge.outcome is Outcome.succeeded

    def refund(amount_minor: int, key: str) -> Any:
        return processor.refund(RefundRequest(key, charge.charge_id, amount_minor, "USD"))

    partial_key, rest_key = new_key("rf"), new_key("rf")
    partial = refund(300, partial_key)
    assert (partial.outcome, partial.amount_minor) == (Outcome.succeeded, 300)
    assert partial.refund_id.startswith("re_")
    assert refund(300, partial_key) == partial  # idempotent: no second refund

    too_much = refund(701, new_key("rf"))
    assert too_much.outcome is Outcome.declined
    assert too_much.refund_id == ""

    rest = refund(700, rest_key)
    assert (rest.outcome, rest.amount_minor) == (Outcome.succeeded, 700)

    nothing_left = refund(1, new_key("rf"))
    assert nothing_left.outcome is Outcome.declined
    assert "charge_already_refunded" in nothing_left.message

    refunds = setup_client.v1.refunds.list({"payment_intent": charge.charge_id, "limit": 100})
    assert sorted(r.amount for r in refunds.data) == [300, 700]


def test_refund_beyond_the_charge_is_declined(
    processor: StripeProcessor, setup_client: stripe.StripeClient
) -> None:
    customer, method = saved_card(setup_client)
    charge = processor.charge(charge_request(customer, method, 1000))
    result = processor.refund(RefundRequest(new_key("rf"), charge.charge_id, 1001, "USD"))
    assert result.outcome is Outcome.declined
    refunds = setup_client.v1.refunds.list({"payment_intent": charge.charge_id, "limit": 100})
    assert list(refunds.data) == []


# --- payouts ------------------------------------------------------------------------------


def test_payout_is_scheduled_once(
    processor: StripeProcessor, setup_client: stripe.StripeClient
) -> None:
    request = PayoutRequest(new_key("po"), "ba_creator_bank", 5000, "EUR", "creator payout")

    first = processor.payout(request)
    second = processor.payout(request)

    assert first.outcome is Outcome.succeeded
    assert first.payout_id.startswith("po_")
    assert first.amount_minor == 5000
    assert second == first
    payouts = setup_client.v1.payouts.list({"limit": 100}).data
    mine = [
        p
        for p in payouts
        if p.to_dict().get("metadata", {}).get("micropay_idempotency_key")
        == request.idempotency_key
    ]
    assert [p.id for p in mine] == [first.payout_id]


def test_payout_refused_by_the_processor_is_declined(processor: StripeProcessor) -> None:
    # localstripe pays out EUR only; a currency it refuses stands for any 400 refusal.
    result = processor.payout(PayoutRequest(new_key("po"), "", 5000, "USD"))
    assert result.outcome is Outcome.declined


# --- request checks and currencies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("jpy", 0),
        ("KRW", 0),
        ("XPF", 0),
        ("VND", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("TND", 3),
        ("ISK", 2),
    ],
)
def test_minor_exponent(processor: StripeProcessor, currency: str, exponent: int) -> None:
    assert processor.minor_exponent(currency) == exponent


@pytest.mark.parametrize(
    "bad",
    [
        {"amount_minor": 0},
        {"amount_minor": -5},
        {"amount_minor": 1.5},
        {"currency": "US"},
        {"idempotency_key": ""},
        {"idempotency_key": "k" * 256},
        {"customer_token": "4242424242424242"},
        {"payment_method_token": "4242 4242 4242 4242"},
    ],
)
def test_invalid_requests_raise_before_any_call(
    make_processor: Callable[..., StripeProcessor],
    fault_proxy: Callable[[str], FaultProxy],
    bad: dict[str, Any],
) -> None:
    proxy = fault_proxy("status:500")
    fields = {"customer_token": "cus_x", "payment_method_token": "pm_x", **bad}
    customer = fields.pop("customer_token")
    method = fields.pop("payment_method_token")
    amount = fields.pop("amount_minor", 100)
    with pytest.raises(ValueError, match=r"must be|not a processor token") as caught:
        make_processor(proxy.url).charge(charge_request(customer, method, amount, **fields))
    assert not re.search(r"\d{4}", str(caught.value))  # the bad value is not echoed
    assert proxy.requests_seen == 0


# --- events ------------------------------------------------------------------------------------

NOW_S = 1_800_000_000


def sign(payload: bytes, timestamp_s: int, secret: str = WEBHOOK_SECRET) -> str:
    """An independent signer (not the SDK's): HMAC-SHA256 of "{t}.{payload}"."""
    digest = hmac.new(secret.encode(), str(timestamp_s).encode() + b"." + payload, hashlib.sha256)
    return f"t={timestamp_s},v1={digest.hexdigest()}"


def event_payload(event_type: str = "payment_intent.succeeded", **obj: Any) -> bytes:
    data = {
        "id": "pi_123",
        "object": "payment_intent",
        "amount": 1500,
        "amount_received": 1500,
        "currency": "usd",
        "status": "succeeded",
        **obj,
    }
    event = {
        "id": "evt_abc",
        "object": "event",
        "type": event_type,
        "created": NOW_S - 5,
        "data": {"object": data},
    }
    return json.dumps(event).encode()


def test_valid_event_is_accepted_and_parsed(processor: StripeProcessor) -> None:
    payload = event_payload()
    event = processor.verify_event(payload, sign(payload, NOW_S - 5), NOW_S)
    assert event.event_id == "evt_abc"
    assert event.kind is EventKind.charge_succeeded
    assert (event.object_id, event.charge_id) == ("pi_123", "pi_123")
    assert (event.amount_minor, event.currency, event.status) == (1500, "USD", "succeeded")
    assert event.created_s == NOW_S - 5


def test_one_of_several_signatures_may_match(processor: StripeProcessor) -> None:
    payload = event_payload()
    old = sign(payload, NOW_S, "whsec_old_secret").split(",")[1]
    header = f"t={NOW_S},{old},{sign(payload, NOW_S).split(',')[1]}"
    assert processor.verify_event(payload, header, NOW_S).event_id == "evt_abc"


def test_duplicated_event_parses_to_the_same_id(processor: StripeProcessor) -> None:
    payload = event_payload()
    first = processor.verify_event(payload, sign(payload, NOW_S), NOW_S)
    again = processor.verify_event(payload, sign(payload, NOW_S + 60), NOW_S + 60)
    assert first.event_id == again.event_id == "evt_abc"
    assert first == again


@pytest.mark.parametrize("skew_s", [-300, 0, 300])
def test_timestamps_within_tolerance_pass(processor: StripeProcessor, skew_s: int) -> None:
    payload = event_payload()
    assert processor.verify_event(payload, sign(payload, NOW_S + skew_s), NOW_S).event_id


def _tampered() -> tuple[bytes, str]:
    header = sign(event_payload(), NOW_S)
    return event_payload(amount_received=150_000), header


def _signed(
    payload: bytes, timestamp_s: int = NOW_S, secret: str = WEBHOOK_SECRET
) -> tuple[bytes, str]:
    return payload, sign(payload, timestamp_s, secret)


REJECTED_VECTORS: dict[str, tuple[tuple[bytes, str], str]] = {
    "tampered payload": (_tampered(), "no signature matches"),
    "wrong secret": (_signed(event_payload(), secret="whsec_someone_else"), "no signature matches"),
    "stale": (_signed(event_payload(), NOW_S - 301), "older than"),
    "future-dated": (_signed(event_payload(), NOW_S + 301), "future"),
    "missing header": ((event_payload(), ""), "missing"),
    "garbage header": ((event_payload(), "not a signature"), "malformed"),
    "no timestamp": ((event_payload(), "v1=" + "0" * 64), "malformed"),
    "non-numeric timestamp": ((event_payload(), "t=soon,v1=" + "0" * 64), "malformed"),
    "two timestamps": ((event_payload(), f"t={NOW_S},t={NOW_S},v1=00"), "malformed"),
    "no v1 signature": ((event_payload(), f"t={NOW_S},v0=abc"), "no v1"),
    "signed non-json": (_signed(b"not json"), "not JSON"),
    "signed non-event": (_signed(b'{"id": "evt_1"}'), "not a Stripe event"),
    "signed non-utf8": (_signed(b"\xff\xfe"), "not UTF-8"),
}


@pytest.mark.parametrize("vector", list(REJECTED_VECTORS))
def test_bad_events_are_rejected_with_a_clean_reason(
    processor: StripeProcessor, vector: str
) -> None:
    (payload, header), reason = REJECTED_VECTORS[vector]
    with pytest.raises(EventRejected, match=reason) as caught:
        processor.verify_event(payload, header, NOW_S)
    message = str(caught.value)
    assert WEBHOOK_SECRET not in message
    assert "Traceback" not in message
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("event_type", "kind", "obj", "charge_id", "amount"),
    [
        (
            "payment_intent.payment_failed",
            EventKind.charge_failed,
            {"id": "pi_9", "amount": 70, "amount_received": 0},
            "pi_9",
            70,
        ),
        (
            "charge.refunded",
            EventKind.charge_refunded,
            {"id": "ch_1", "payment_intent": "pi_9", "amount_refunded": 30},
            "pi_9",
            30,
        ),
        (
            "charge.dispute.created",
            EventKind.dispute_created,
            {"id": "dp_1", "charge": "ch_1", "payment_intent": "pi_9", "amount": 70},
            "pi_9",
            70,
        ),
        (
            "charge.dispute.closed",
            EventKind.dispute_closed,
            {"id": "dp_1", "charge": "ch_1", "amount": 70},
            "ch_1",
            70,
        ),
        ("payout.paid", EventKind.payout_paid, {"id": "po_1", "amount": 900}, "", 900),
        ("payout.failed", EventKind.payout_failed, {"id": "po_1", "amount": 900}, "", 900),
        ("customer.created", EventKind.other, {"id": "cus_1", "amount": None}, "", 0),
    ],
)
def test_event_kinds(
    processor: StripeProcessor,
    event_type: str,
    kind: EventKind,
    obj: dict[str, Any],
    charge_id: str,
    amount: int,
) -> None:
    payload = event_payload(event_type, **obj)
    event = processor.verify_event(payload, sign(payload, NOW_S), NOW_S)
    assert (event.kind, event.object_id, event.charge_id, event.amount_minor) == (
        kind,
        obj["id"],
        charge_id,
        amount,
    )


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: queue.Queue[tuple[bytes, str]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.put((body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_event_signed_by_localstripe_verifies(
    processor: StripeProcessor, setup_client: stripe.StripeClient, stripe_url: str
) -> None:
    received: queue.Queue[tuple[bytes, str]] = queue.Queue()
    handler = type("Receiver", (_Receiver,), {"received": received})
    with http.server.HTTPServer(("127.0.0.1", 0), handler) as receiver:
        thread = threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            hook = urllib.parse.urlencode(
                {
                    "url": f"http://127.0.0.1:{receiver.server_address[1]}/hook",
                    "secret": WEBHOOK_SECRET,
                    "events[]": "payment_intent.succeeded",
                }
            ).encode()
            with urllib.request.urlopen(f"{stripe_url}/_config/webhooks/micropay", hook, 5):
                pass
            customer, method = saved_card(setup_client)
            charge = processor.charge(charge_request(customer, method, 2500))
            deadline = time.monotonic() + 15
            while True:
                payload, header = received.get(timeout=max(0.1, deadline - time.monotonic()))
                if json.loads(payload)["data"]["object"]["id"] == charge.charge_id:
                    break
        finally:
            receiver.shutdown()
            thread.join(timeout=5)
            # localstripe cannot unregister a webhook: later deliveries to it just fail.

    event = processor.verify_event(payload, header, int(time.time()))
    assert event.kind is EventKind.charge_succeeded
    assert (event.charge_id, event.amount_minor, event.currency) == (charge.charge_id, 2500, "USD")
    with pytest.raises(EventRejected):
        processor.verify_event(payload.replace(b"2500", b"2501"), header, int(time.time()))
