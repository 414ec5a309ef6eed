"""Webhook endpoints and the dispatcher that delivers the outbox.

Delivery is at-least-once: a delivery is leased, sent, then its outcome is
recorded by the lease's owner. A dispatcher that dies after sending and
before recording leaves the lease to expire; the next dispatcher sends the
same event again with the same ``webhook-id`` (receivers dedupe by it).

Retries back off exponentially (``backoff_s`` doubling, capped at
``backoff_s_max``) for up to ``retry_window_s`` (3 days) after the event;
then the delivery is ``failed``. A ``410 Gone`` fails the delivery at once
and disables the endpoint. Every attempt is logged (attempt number, status
code, latency, error). A finished delivery can be replayed by hand.

The endpoint URL is checked against SSRF at registration and again before
every attempt (see :mod:`micropay.webhooks.ssrf`); a refused address is a
failed attempt, retried like any other (DNS may come back).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from micropay.service.ledger import Clock, system_clock_us
from micropay.service.retry import run_with_retries
from micropay.store.webhooks_sql import AttemptRow, DeliveryRow, EndpointRow
from micropay.webhooks import http
from micropay.webhooks.outbox import EVENT_TYPES, webhooks_tx
from micropay.webhooks.signing import new_secret, sign_headers
from micropay.webhooks.ssrf import Resolver, UrlCheck, check_url, system_resolver

T = TypeVar("T")
retry_window_s_default = 3 * 86_400
backoff_s_default = 5.0
backoff_s_max_default = 6 * 3_600.0
deliveries_per_claim_max = 100
endpoints_per_merchant_max = 16

Sender = Callable[[UrlCheck, dict[str, str], bytes], http.HttpResult]


class EndpointRefusal(enum.Enum):
    url_refused = "url_refused"
    events_invalid = "events_invalid"
    too_many_endpoints = "too_many_endpoints"
    not_found = "not_found"


@dataclass(frozen=True, slots=True)
class EndpointResult:
    endpoint: EndpointRow | None
    refusal: EndpointRefusal | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    delivery_id: int
    event_id: str
    state: str  # succeeded | pending (retry) | failed | cancelled | lease_lost
    status_code: int | None
    error: str


class _LeaseLost(Exception):
    pass


class Webhooks:
    """Endpoints, dispatch and replay over one store connection (one instance per thread)."""

    def __init__(
        self,
        store: Any,
        *,
        clock: Clock = system_clock_us,
        wall_clock: Callable[[], float] = time.time,
        owner: str = "",
        allow_private_in_test: bool = False,
        resolver: Resolver = system_resolver,
        sender: Sender | None = None,
        retry_window_s: int = retry_window_s_default,
        backoff_s: float = backoff_s_default,
        backoff_s_max: float = backoff_s_max_default,
        total_timeout_s: float = http.total_timeout_s_default,
    ) -> None:
        self.store = store
        self.clock = clock
        self.wall_clock = wall_clock  # the webhook-timestamp: when the attempt is signed
        self.owner = owner or f"webhooks:{id(self):x}:{time.monotonic_ns():x}"
        self.allow_private_in_test = allow_private_in_test
        self.resolver = resolver
        self.total_timeout_s = total_timeout_s
        self.sender: Sender = sender or (
            lambda check, headers, body: http.post(
                check, headers, body, total_timeout_s=self.total_timeout_s
            )
        )
        self.retry_window_us = retry_window_s * 1_000_000
        self.backoff_s = backoff_s
        self.backoff_s_max = backoff_s_max

    def _tx(self, operation: Callable[[Any], T]) -> T:
        def once() -> T:
            with self.store.write() as tx:
                return operation(tx)

        return run_with_retries(once)

    def check(self, url: object, live: bool) -> UrlCheck:
        return check_url(
            url,
            live=live,
            allow_private=self.allow_private_in_test and not live,
            resolver=self.resolver,
        )

    # --- endpoints ----------------------------------------------------------------

    def register_endpoint(
        self, merchant_id: int, url: str, *, live: bool, events: tuple[str, ...] = ("*",)
    ) -> EndpointResult:
        """Register an endpoint (its secret is in the result: show it once)."""
        if not events or any(e != "*" and e not in EVENT_TYPES for e in events):
            return EndpointResult(None, EndpointRefusal.events_invalid, f"one of {EVENT_TYPES}")
        checked = self.check(url, live)
        if not checked.ok:
            assert checked.refusal is not None
            return EndpointResult(None, EndpointRefusal.url_refused, checked.message)

        def insert(tx: Any) -> EndpointResult:
            sql = webhooks_tx(tx)
            if len(sql.list_webhook_endpoints(merchant_id)) >= endpoints_per_merchant_max:
                return EndpointResult(None, EndpointRefusal.too_many_endpoints)
            row = sql.insert_webhook_endpoint(
                merchant_id, url, new_secret(), live, " ".join(sorted(set(events))), self.clock()
            )
            return EndpointResult(row)

        return self._tx(insert)

    def set_enabled(self, endpoint_id: int, enabled: bool, reason: str = "disabled") -> bool:
        now_us = self.clock()
        return self._tx(
            lambda tx: webhooks_tx(tx).set_webhook_endpoint_enabled(
                endpoint_id, enabled, reason, now_us
            )
        )

    def endpoint(self, endpoint_id: int) -> EndpointRow | None:
        return self._tx(lambda tx: webhooks_tx(tx).get_webhook_endpoint(endpoint_id))

    def deliveries(
        self, endpoint_id: int | None = None, state: str | None = None
    ) -> list[DeliveryRow]:
        return self._tx(lambda tx: webhooks_tx(tx).list_webhook_deliveries(endpoint_id, state))

    def attempts(self, delivery_id: int) -> list[AttemptRow]:
        return self._tx(lambda tx: webhooks_tx(tx).list_webhook_attempts(delivery_id))

    def replay(self, delivery_id: int) -> bool:
        """Send a finished delivery again (same event, same webhook-id); False if pending."""
        now_us = self.clock()
        return self._tx(lambda tx: webhooks_tx(tx).replay_webhook_delivery(delivery_id, now_us))

    # --- dispatch -----------------------------------------------------------------

    def retry_delay_us(self, attempt: int) -> int:
        return int(min(self.backoff_s_max, self.backoff_s * 2 ** min(attempt - 1, 40)) * 1e6)

    def deliver_due(self, limit: int = deliveries_per_claim_max) -> list[DeliveryOutcome]:
        """Claim the due deliveries (at most ``limit``) and send each once."""
        now_us = self.clock()
        count = min(limit, deliveries_per_claim_max)
        lease_us = int((count * (self.total_timeout_s + 1) + 30) * 1_000_000)
        claimed = self._tx(
            lambda tx: webhooks_tx(tx).claim_webhook_deliveries(
                self.owner, now_us, now_us + lease_us, count
            )
        )
        return [self._deliver(d) for d in claimed]

    def drain(self, passes_max: int = 100) -> list[DeliveryOutcome]:
        """Deliver until nothing is due now (bounded)."""
        outcomes: list[DeliveryOutcome] = []
        for _ in range(passes_max):
            step = self.deliver_due()
            outcomes.extend(step)
            if not step:
                break
        return outcomes

    def _deliver(self, d: DeliveryRow) -> DeliveryOutcome:
        def read(tx: Any) -> tuple[Any, Any]:
            sql = webhooks_tx(tx)
            return sql.get_webhook_endpoint(d.endpoint_id), sql.get_webhook_event(d.event_id)

        endpoint, event = self._tx(read)
        if endpoint is None or event is None or not endpoint.enabled:
            return self._record(d, None, "cancelled: the endpoint is disabled", 0, "cancelled")
        checked = self.check(endpoint.url, endpoint.live)
        if not checked.ok:
            result = http.HttpResult(None, f"refused: {checked.message}", 0)
        else:
            headers = sign_headers(endpoint.secret, event.id, int(self.wall_clock()), event.payload)
            result = self.sender(checked, headers, event.payload.encode())
        status = result.status
        if status is not None and 200 <= status < 300:
            state = "succeeded"
        elif status == 410:
            state = "failed"
        else:
            retry_at = self.clock() + self.retry_delay_us(d.attempts)
            state = (
                "pending" if retry_at <= event.created_at_us + self.retry_window_us else "failed"
            )
        return self._record(d, status, result.error, result.latency_us, state)

    def _record(
        self, d: DeliveryRow, status: int | None, error: str, latency_us: int, state: str
    ) -> DeliveryOutcome:
        now_us = self.clock()
        next_at = now_us + self.retry_delay_us(d.attempts) if state == "pending" else now_us

        def write(tx: Any) -> None:
            sql = webhooks_tx(tx)
            if not sql.finish_webhook_delivery(d.id, self.owner, state, next_at, status, now_us):
                raise _LeaseLost
            sql.insert_webhook_attempt(d.id, d.attempts, status, latency_us, error, now_us)
            if status == 410:
                sql.set_webhook_endpoint_enabled(d.endpoint_id, False, "410 Gone", now_us)

        try:
            self._tx(write)
        except _LeaseLost:
            return DeliveryOutcome(d.id, d.event_id, "lease_lost", status, error)
        return DeliveryOutcome(d.id, d.event_id, state, status, error)


def register_webhook_jobs(
    registry: Any,
    make_webhooks: Callable[[], Webhooks],
    every_s: int = 5,
    on_outcomes: Callable[[list[DeliveryOutcome]], object] | None = None,
) -> None:
    """Add the ``deliver_webhooks`` recurring job to a worker :class:`Registry`.

    ``make_webhooks`` is called once per job run (a store connection per worker
    thread is the caller's business; a cached instance is fine for one thread).
    ``on_outcomes`` sees each run's outcomes (metrics count them).
    """
    from micropay.worker.jobs import JobSpec

    def run(_job: Any) -> list[DeliveryOutcome]:
        outcomes = make_webhooks().drain()
        if on_outcomes is not None:
            on_outcomes(outcomes)
        return outcomes

    registry.register(
        JobSpec(
            "deliver_webhooks",
            run=run,
            every_s=every_s,
            attempts_max=3,
            backoff_s=1.0,
        )
    )
