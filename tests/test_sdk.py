"""The Python SDK against the real app, in process (no sockets), on SQLite and PostgreSQL.

The sync :class:`Client` reaches the app through a small ``httpx.BaseTransport``
that runs ``httpx.ASGITransport`` in an anyio blocking portal; the async client
uses ``httpx.ASGITransport`` directly. A fault-injecting transport in front of
either drops connections (before or after the server ran the request) and
answers 429/409/5xx, so retries, back-off and idempotent replays are observed
on the real server: a dropped purchase is retried with the same key, replayed,
and charged once (the wallet then affords exactly what is left).
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
from fastapi import FastAPI

from conftest import FakeClock
from micropay.api import ApiConfig, create_app
from micropay.api.admin import create_key
from micropay.client import (
    NO_RETRIES,
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from micropay.client._core import parse_retry_after
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.reconcile import reconcile
from micropay.store import open_store

BASE = "http://micropay.test"
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)


class PortalTransport(httpx.BaseTransport):
    """A sync httpx transport onto an ASGI app, through an anyio blocking portal."""

    def __init__(self, app: Any, portal: anyio.from_thread.BlockingPortal) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()

        async def go() -> tuple[int, httpx.Headers, bytes]:
            forwarded = httpx.Request(
                request.method, request.url, headers=request.headers, content=content
            )
            response = await self.inner.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        status, headers, body = self.portal.call(go)
        return httpx.Response(status, headers=headers, content=body, request=request)


@dataclass
class Sent:
    method: str
    path: str
    idempotency_key: str | None


Fault = Callable[[httpx.Request], httpx.Response | None]  # None: forward to the app


def drop_after_send(request: httpx.Request) -> None:
    """Marker: forward, let the server commit, then lose the answer."""


def drop_before_send(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused (simulated)", request=request)


def reply(status: int, code: str, headers: dict[str, str] | None = None) -> Fault:
    def fault(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": code, "message": code, "request_id": "req_simulated"}}
        return httpx.Response(status, json=body, headers=headers, request=request)

    return fault


@dataclass
class Faults:
    """Faults to inject, per path, in order; every request is recorded."""

    plan: dict[str, list[Fault]] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)

    def next_fault(self, request: httpx.Request) -> Fault | None:
        self.sent.append(
            Sent(request.method, request.url.path, request.headers.get("idempotency-key"))
        )
        queue = self.plan.get(request.url.path)
        return queue.pop(0) if queue else None

    def to(self, path: str) -> list[Sent]:
        return [s for s in self.sent if s.path == path]


class FaultySync(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, faults: Faults) -> None:
        self.inner, self.faults = inner, faults

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        fault = self.faults.next_fault(request)
        if fault is drop_after_send:
            self.inner.handle_request(request).read()
            raise httpx.ReadError("connection reset by peer (simulated)", request=request)
        if fault is not None:
            made = fault(request)
            assert made is not None
            return made
        return self.inner.handle_request(request)


class FaultyAsync(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, faults: Faults) -> None:
        self.inner, self.faults = inner, faults

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault = self.faults.next_fault(request)
        if fault is drop_after_send:
            await (await self.inner.handle_async_request(request)).aread()
            raise httpx.ReadError("connection reset by peer (simulated)", request=request)
        if fault is not None:
            made = fault(request)
            assert made is not None
            return made
        return await self.inner.handle_async_request(request)


@dataclass
class Harness:
    app: FastAPI
    operator_key: str
    portal: anyio.from_thread.BlockingPortal
    database_url: str
    faults: Faults = field(default_factory=Faults)
    slept: list[float] = field(default_factory=list)

    def client(self, key: str | None, retry: RetryPolicy = FAST) -> Client:
        transport = FaultySync(PortalTransport(self.app, self.portal), self.faults)
        return Client(
            key,
            BASE,
            transport=transport,
            retry=retry,
            sleep=self.slept.append,
            rng=random.Random(7),
        )

    def async_client(self, key: str | None, retry: RetryPolicy = FAST) -> AsyncClient:
        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)

        transport = FaultyAsync(httpx.ASGITransport(app=self.app), self.faults)
        return AsyncClient(
            key, BASE, transport=transport, retry=retry, sleep=sleep, rng=random.Random(7)
        )

    def merchant(self, funding: list[str] | None = None) -> str:
        with self.client(self.operator_key) as operator:
            created = operator.create_merchant("Daily Planet", "USD", funding_policy=funding)
        assert created.secret_key.token is not None
        return created.secret_key.token

    def reconciled(self) -> bool:
        store = open_store(self.database_url)
        try:
            return reconcile(store).ok
        finally:
            store.close()


def _harness(database_url: str, clock: FakeClock, **config: Any) -> Iterator[Harness]:
    operator_key = create_key(database_url, "operator", "live")
    app = create_app(ApiConfig(database_url, processor=SimulatedProcessor(), clock=clock, **config))
    try:
        with anyio.from_thread.start_blocking_portal() as portal:
            yield Harness(app, operator_key, portal, database_url)
    finally:
        app.state.runtime.close()


@pytest.fixture
def h(database_url: str, clock: FakeClock) -> Iterator[Harness]:
    yield from _harness(database_url, clock)


@pytest.fixture
def h_limited(new_database_url: Callable[[str], str], clock: FakeClock) -> Iterator[Harness]:
    """SQLite, with the API's rate limit at a burst of 2 then 1 request/s per key."""
    yield from _harness(new_database_url("sqlite"), clock, rate_per_s=1.0, rate_burst=2)


# --- a newcomer's flow ------------------------------------------------------------


def test_newcomer_flow_sync(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with h.client(h.operator_key) as operator:
        created = operator.create_merchant("Daily Planet", "USD")
    token = created.secret_key.token
    assert token is not None
    assert token.startswith("mp_sk_test_")
    assert created.merchant.id.startswith("mer_")
    assert token not in repr(created)
    assert token not in str(created)

    with h.client(token) as mp:
        assert token not in repr(mp)
        reader = mp.create_customer(payment_method_token="pm_card_ok")
        assert reader.id.startswith("cus_")
        assert mp.get_customer(reader.id) == reader
        item = mp.put_item("article-1", "An article", 250_000)
        assert (item.price, item.currency, item.access_period_s) == ("0.25", "USD", 0)
        assert mp.get_item("article-1") == item
        before = mp.check_entitlement(reader.id, "article-1")
        assert before.active is False
        top_up = mp.top_up(reader.id, 5_000_000)
        assert (top_up.status, top_up.amount) == ("ok", "5.00")
        bought = mp.purchase(reader.id, "article-1", price_micros=250_000)
        assert (bought.status, bought.funding, bought.price) == ("ok", "wallet", "0.25")
        assert bought.replayed is False
        assert bought.id is not None
        again = mp.purchase(reader.id, "article-1")
        assert (again.status, again.id) == ("already_entitled", bought.id)
        assert mp.get_purchase(bought.id).price_micros == 250_000
        assert [p.id for p in mp.list_purchases()] == [bought.id]
        after = mp.check_entitlement(reader.id, "article-1")
        assert after.active is True
        assert after.token is not None
        assert after.token not in repr(after)
        key = mp.entitlement_key()
        assert key.alg == "EdDSA"
        assert "PUBLIC KEY" in key.public_key_pem
        refund = mp.refund(bought.id, 100_000, destination="wallet")
        assert (refund.amount, refund.destination) == ("0.10", "wallet")
    assert h.slept == []  # nothing failed, nothing retried
    assert token not in caplog.text
    assert h.operator_key not in caplog.text
    assert h.reconciled()


def test_newcomer_flow_async_with_pagination(h: Harness) -> None:
    token = h.merchant()

    async def main() -> None:
        async with h.async_client(token) as mp:
            made = [
                (await mp.create_customer(payment_method_token="pm_card_ok")).id for _ in range(5)
            ]
            seen = [c.id async for c in mp.list_customers(page_size=2)]
            assert sorted(seen) == sorted(made)
            assert len(seen) == 5
            page = await mp.customers_page(limit=2)
            assert (len(page.data), page.has_more) == (2, True)
            await mp.put_item("song-9", "A song", 990_000)
            await mp.top_up(made[0], 5_000_000)
            bought = await mp.purchase(made[0], "song-9")
            assert bought.granted
            assert (await mp.check_entitlement(made[0], "song-9")).active
            assert [p.id async for p in mp.list_purchases(page_size=1)] == [bought.id]

    anyio.run(main)
    # 5 customers in pages of 2: 3 list requests, plus the one page asked for; no retries.
    assert len([s for s in h.faults.sent if s.path == "/v1/customers" and s.method == "GET"]) == 4
    assert h.slept == []


# --- retries are safe: the same key, one charge -----------------------------------


def _wallet_only_buyer(mp: Client) -> str:
    reader = mp.create_customer(payment_method_token="pm_card_ok")
    mp.top_up(reader.id, 5_000_000)
    for ref, price in (("a", 2_500_000), ("b", 2_500_000), ("c", 10_000)):
        mp.put_item(ref, ref, price)
    return reader.id


def _charged_exactly_once(mp: Client, reader: str) -> None:
    """5.00 topped up, 2.50 spent: b (2.50) is affordable, then c (0.01) is not."""
    assert mp.purchase(reader, "b").status == "ok"
    with pytest.raises(PaymentRequiredError) as refused:
        mp.purchase(reader, "c")
    assert refused.value.code == "insufficient_funds"


def test_a_purchase_whose_answer_was_lost_is_replayed_not_charged_twice(h: Harness) -> None:
    token = h.merchant(funding=["wallet"])
    with h.client(token) as mp:
        reader = _wallet_only_buyer(mp)
        h.faults.plan["/v1/purchases"] = [drop_after_send]
        bought = mp.purchase(reader, "a")
        assert bought.status == "ok"
        assert bought.replayed is True  # the second attempt got the stored answer
        tries = h.faults.to("/v1/purchases")
        assert len(tries) == 2
        assert tries[0].idempotency_key == tries[1].idempotency_key
        assert tries[0].idempotency_key is not None
        assert len(h.slept) == 1
        assert FAST.base_delay_s / 2 <= h.slept[0] <= FAST.base_delay_s
        assert [p.id for p in mp.list_purchases()] == [bought.id]
        _charged_exactly_once(mp, reader)
    assert h.reconciled()


def test_async_retries_after_a_refused_connection_and_a_lost_answer(h: Harness) -> None:
    token = h.merchant(funding=["wallet"])
    with h.client(token) as mp:
        reader = _wallet_only_buyer(mp)

    async def main() -> str | None:
        async with h.async_client(token) as amp:
            h.faults.plan["/v1/purchases"] = [drop_before_send, drop_after_send]
            bought = await amp.purchase(reader, "a", idempotency_key="order-42")
            assert (bought.status, bought.replayed) == ("ok", True)
            return bought.id

    bought_id = anyio.run(main)
    keys = [s.idempotency_key for s in h.faults.to("/v1/purchases")]
    assert keys == ["order-42"] * 3  # the caller's key, on every attempt
    assert len(h.slept) == 2
    assert h.slept[1] > FAST.base_delay_s  # the second back-off is longer (2x ceiling)
    with h.client(token) as mp:
        assert [p.id for p in mp.list_purchases()] == [bought_id]
        _charged_exactly_once(mp, reader)


def test_in_progress_and_gateway_errors_are_retried_other_errors_are_not(h: Harness) -> None:
    token = h.merchant()
    with h.client(token) as mp:
        h.faults.plan["/v1/customers"] = [
            reply(409, "idempotency_request_in_progress"),
            reply(503, "unavailable"),
            reply(502, "bad_gateway"),
        ]
        reader = mp.create_customer()
        assert mp.get_customer(reader.id) == reader
        tries = h.faults.to("/v1/customers")
        assert len(tries) == 4
        assert len({t.idempotency_key for t in tries}) == 1
        assert len(h.slept) == 3

        h.faults.plan["/v1/customers"] = [reply(500, "internal_error")]
        with pytest.raises(ServerError) as failed:
            mp.create_customer()
        assert (failed.value.status, failed.value.code) == (500, "internal_error")
        h.faults.plan["/v1/customers"] = [reply(409, "idempotency_key_reused")]
        with pytest.raises(ConflictError):
            mp.create_customer()
        assert len(h.slept) == 3  # neither a 500 nor another 409 was retried

        h.faults.plan["/v1/customers"] = [reply(504, "timeout")] * 10
        with pytest.raises(ServerError) as gave_up:
            mp.create_customer()
        assert gave_up.value.status == 504
        assert len(h.slept) == 3 + FAST.max_attempts - 1  # bounded attempts
        assert all(s <= FAST.max_delay_s for s in h.slept)


def test_a_connection_that_never_answers_gives_up_after_bounded_attempts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        slept: list[float] = []
        with (
            Client("mp_sk_test_x", f"http://127.0.0.1:{port}", sleep=slept.append) as mp,
            pytest.raises(APIConnectionError) as failed,
        ):
            mp.get_customer("cus_0000000000000000")
    assert failed.value.status is None
    assert len(slept) == RetryPolicy().max_attempts - 1
    assert "mp_sk_test_x" not in str(failed.value)


# --- 429 ---------------------------------------------------------------------------


def test_429_retry_after_is_honoured(h: Harness) -> None:
    token = h.merchant()
    with h.client(token) as mp:
        h.faults.plan["/v1/customers"] = [reply(429, "rate_limited", {"Retry-After": "3"})]
        reader = mp.create_customer()
        assert reader.id.startswith("cus_")
        assert h.slept == [3.0]
        h.faults.plan["/v1/customers"] = [reply(429, "rate_limited", {"Retry-After": "3600"})]
        with pytest.raises(RateLimitError) as too_long:
            mp.create_customer()  # longer than the policy's cap: give up at once
        assert too_long.value.retry_after_s == 3600.0
        assert h.slept == [3.0]


def test_the_servers_own_rate_limit(h_limited: Harness) -> None:
    """The real limiter answers 429 with Retry-After; the SDK waits it out and succeeds."""
    h = h_limited
    token = h.merchant()
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        time.sleep(seconds)  # the real limiter refills in real time

    transport = FaultySync(PortalTransport(h.app, h.portal), h.faults)
    with Client(token, BASE, transport=transport, sleep=sleep) as mp:
        for _ in range(2):
            with pytest.raises(NotFoundError):
                mp.get_item("nothing")  # spends the burst
        with pytest.raises(NotFoundError):
            mp.get_item("nothing")  # 429 first, then after Retry-After a 404
        assert waited == [1.0]
        assert len(h.faults.to("/v1/items/nothing")) == 4
    limited: list[RateLimitError] = []
    with Client(token, BASE, transport=transport, retry=NO_RETRIES) as strict:
        for _ in range(5):  # the burst is 2: the third call at the latest is limited
            try:
                strict.get_item("nothing")
            except NotFoundError:
                continue
            except RateLimitError as error:
                limited.append(error)
                break
    assert len(limited) == 1
    assert (limited[0].status, limited[0].code) == (429, "rate_limited")
    assert limited[0].retry_after_s is not None
    assert limited[0].retry_after_s >= 1


# --- error mapping -------------------------------------------------------------------


def test_errors_map_to_classes_with_code_status_and_request_id(h: Harness) -> None:
    token = h.merchant(funding=["wallet"])
    with (
        h.client("mp_sk_test_0000000000000000_nope", retry=FAST) as bad,
        pytest.raises(AuthenticationError) as unauth,
    ):
        bad.list_keys()
    assert (unauth.value.status, unauth.value.code) == (401, "api_key_invalid")
    assert unauth.value.request_id is not None
    assert unauth.value.request_id.startswith("req_")
    assert "nope" not in str(unauth.value)

    with h.client(token) as mp:
        reader = mp.create_customer(payment_method_token="pm_card_ok")
        with pytest.raises(NotFoundError) as missing:
            mp.get_customer("cus_0123456789abcdef")
        assert missing.value.code == "customer_not_found"
        with pytest.raises(InvalidRequestError) as invalid:
            mp.top_up(reader.id, 1)  # below the minimum top-up
        assert (invalid.value.status, invalid.value.code) == (422, "validation_failed")
        mp.put_item("a", "a", 300_000)
        with pytest.raises(PaymentRequiredError) as broke:
            mp.purchase(reader.id, "a")
        assert (broke.value.status, broke.value.code) == (402, "insufficient_funds")
        with pytest.raises(ConflictError) as price:
            mp.purchase(reader.id, "a", price_micros=1)
        assert price.value.code == "price_invalid"
        mp.top_up(reader.id, 5_000_000, idempotency_key="k-1")
        with pytest.raises(ConflictError) as reused:
            mp.top_up(reader.id, 6_000_000, idempotency_key="k-1")
        assert reused.value.code == "idempotency_key_reused"
        publishable = mp.create_key("publishable").token
        assert publishable is not None
    with h.client(publishable) as narrow:
        assert narrow.check_entitlement(reader.id, "a").active is False
        with pytest.raises(PermissionDeniedError) as scope:
            narrow.purchase(reader.id, "a")
        assert scope.value.code == "key_scope_insufficient"
    assert h.slept == []  # none of these refusals was retried


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=lambda: 1445412480.0)
    assert when == 10.0
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=4.0)
    rng = random.Random(1)
    for attempt, ceiling in ((0, 1.0), (1, 2.0), (2, 4.0), (5, 4.0)):
        for _ in range(50):
            assert ceiling / 2 <= policy.backoff_s(attempt, rng) <= ceiling
