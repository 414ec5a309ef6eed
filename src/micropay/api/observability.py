"""Operations: Prometheus metrics (``GET /metrics``) and JSON log lines without secrets.

Metrics live in a registry per app (``prometheus_client``), served at
``/metrics`` in the Prometheus text format. The endpoint is not in the
OpenAPI schema and needs the operator key (``Authorization: Bearer mp_op_...``;
Prometheus sends it with ``authorization: {credentials_file: ...}``): the
counters tell business volume, which is not public.

- ``micropay_http_request_duration_seconds{method,route,status}``: every
  request, by route *template* (``/v1/customers/{customer_id}``, never a raw
  path; ``unmatched`` for 404s outside any route), so no id or key becomes a
  label.
- ``micropay_purchases_total{outcome}``: answers of ``POST /v1/purchases`` by
  purchase status (``ok``, ``already_entitled``, or the refusal's error code);
  idempotent replays are not counted again.
- ``micropay_sales_total{funding}``: purchases made paid (wallet, tab, direct,
  store credit), fed by ``Payments.sale_hooks``.
- ``micropay_charges_total{purpose,outcome}`` and
  ``micropay_tab_settlements_total{outcome}``: card charges (top-ups, tab
  settlements, direct purchases) by outcome, fed by ``ChargeEngine.outcome_hooks``.
- ``micropay_ledger_transfers``: transfers in the journal, read from the
  database at scrape time (at most every ``ledger_read_every_s``), so it counts
  every process's writes.
- ``micropay_webhook_deliveries_total{state}``: delivery attempts by outcome,
  fed by :func:`count_deliveries` wherever the dispatcher runs.

Hooks run inside the transaction that makes the change: a transaction that
rolls back and is retried may count twice (rare; counters are for rates and
alerts, the ledger is the record).

Logs: :func:`configure_logging` sends every logger's records as one JSON
object per line (``python-json-logger``). A filter on the handler redacts
key-like (``mp_sk_...``) and card-like (12-19 digits) text from the message
and from every string field, and adds the request id of the request being
served (a context variable set by the edge middleware) to each line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import IO, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pythonjsonlogger.json import JsonFormatter

from micropay.api.keys import KEY_LIKE
from micropay.api.runtime import Runtime
from micropay.payments.records import ChargeRecord
from micropay.service.payments import Payments
from micropay.service.ports import PaymentsWriteTx

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "micropay_request_id", default=None
)
_CARD_LIKE = re.compile(r"(?:\d[ -]?){12,19}")
ledger_read_every_s = 10.0
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def redact(text: str) -> str:
    """Remove anything key-like or card-like before it reaches a log."""
    return _CARD_LIKE.sub("[redacted]", KEY_LIKE.sub("[redacted-key]", text))


class Metrics:
    """The app's metrics, in their own registry (so several apps never collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "micropay_http_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ("method", "route", "status"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.purchases = Counter(
            "micropay_purchases",
            "Purchase answers of the API by outcome.",
            ("outcome",),
            registry=r,
        )
        self.sales = Counter(
            "micropay_sales", "Purchases made paid, by funding source.", ("funding",), registry=r
        )
        self.charges = Counter(
            "micropay_charges",
            "Card charges recorded, by purpose and outcome.",
            ("purpose", "outcome"),
            registry=r,
        )
        self.tab_settlements = Counter(
            "micropay_tab_settlements",
            "Tab settlement charges, by outcome.",
            ("outcome",),
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "micropay_webhook_deliveries",
            "Webhook delivery attempts, by resulting state.",
            ("state",),
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # --- feeds ------------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(method, route, str(status)).observe(seconds)

    def observe_purchase_answer(self, status: int, body: bytes) -> None:
        """Count a ``POST /v1/purchases`` answer by its outcome."""
        try:
            parsed = json.loads(body)
        except ValueError:
            return
        if not isinstance(parsed, dict):
            return
        if status < 400:
            outcome = parsed.get("status")
        else:
            error = parsed.get("error")
            outcome = error.get("code") if isinstance(error, dict) else None
        if isinstance(outcome, str) and outcome.isidentifier() and len(outcome) <= 64:
            self.purchases.labels(outcome).inc()

    def on_sale(self, tx: PaymentsWriteTx, purchase_id: int) -> None:
        purchase = tx.get_purchase(purchase_id)
        funding = purchase.funding.value if purchase is not None else "unknown"
        self.sales.labels(funding).inc()

    def on_charge(self, _tx: PaymentsWriteTx, outcome: str, charge: ChargeRecord) -> None:
        self.charges.labels(charge.purpose, outcome).inc()
        if charge.purpose == "tab":
            self.tab_settlements.labels(outcome).inc()

    def attach(self, payments: Payments) -> None:
        """Feed the domain counters from a ``Payments`` service's hooks."""
        payments.sale_hooks.append(self.on_sale)
        payments.charges.outcome_hooks.append(self.on_charge)


def count_deliveries(metrics: Metrics, outcomes: Iterable[Any]) -> None:
    """Count webhook delivery outcomes (``DeliveryOutcome.state``) from a dispatcher run."""
    for outcome in outcomes:
        metrics.webhook_deliveries.labels(str(outcome.state)).inc()


def count_transfers(tx: Any) -> int:
    """The journal's size, read over a store transaction's cursor.

    The store's SQL lives in mixins of its transaction classes (``as_mixin``);
    until the store has a ``count_transfers`` read, this one plain statement
    (no parameters, so the same text on SQLite and PostgreSQL) uses the cursor.
    """
    cursor = tx._cur
    cursor.execute("SELECT count(*) FROM transfers")
    return int(cursor.fetchall()[0][0])


class LedgerCollector(Collector):
    """``micropay_ledger_transfers``: the journal's size, read at scrape time (cached)."""

    def __init__(self, runtime: Runtime, every_s: float = ledger_read_every_s) -> None:
        self.runtime = runtime
        self.every_s = every_s
        self._lock = threading.Lock()
        self._cached: tuple[float, int] | None = None

    def _read(self) -> int:
        now = time.monotonic()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < self.every_s:
                return self._cached[1]
        count = self.runtime.read(count_transfers)
        with self._lock:
            self._cached = (now, count)
        return count

    def collect(self) -> Iterator[Metric]:
        try:
            value = self._read()
        except Exception:  # the database is down: the scrape still answers
            return
        yield GaugeMetricFamily(
            "micropay_ledger_transfers", "Transfers in the ledger journal (all processes).", value
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())


class MetricsRuntime(Runtime):
    """The API runtime with each thread's ``Payments`` feeding ``metrics``."""

    def __init__(self, config: Any, metrics: Metrics) -> None:
        super().__init__(config)
        self.metrics = metrics
        self._attached: weakref.WeakSet[Payments] = weakref.WeakSet()
        self.ledger_collector = LedgerCollector(self)
        metrics.registry.register(self.ledger_collector)

    def payments(self) -> Payments:
        made = super().payments()
        if made not in self._attached:
            self.metrics.attach(made)
            self._attached.add(made)
        return made


def operator_only(runtime: Runtime, authorization: str | None) -> None:
    """Raise the API's error unless ``authorization`` carries the operator key."""
    from micropay.api.errors import ApiError

    principal = runtime.authenticate(authorization)
    if principal.kind != "operator":
        raise ApiError("key_scope_insufficient", "this endpoint needs the operator key")


# --- logs ---------------------------------------------------------------------------

_STANDARD = frozenset(vars(logging.makeLogRecord({})))
_DROPPED = ("color_message",)  # uvicorn's copy of the message with terminal colours


# Fields the app itself makes (never user data): not rewritten by the redaction.
_TRUSTED_FIELDS = frozenset({"request_id"})
_REQUEST_ID = re.compile(r"req_[0-9a-f]{16}")


class RedactFilter(logging.Filter):
    """Redacts the message, every extra string field and any traceback; adds the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        message = record.getMessage()
        if isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id):
            # Our own ids are hex: a run of 12 digits in one is not a card number.
            message = request_id.join(redact(part) for part in message.split(request_id))
        else:
            message = redact(message)
        record.msg, record.args = message, None
        for name in _DROPPED:
            record.__dict__.pop(name, None)
        for name, value in list(vars(record).items()):
            if name in _TRUSTED_FIELDS and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
                continue
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, redact(value))
        if getattr(record, "request_id", None) is None and request_id is not None:
            record.request_id = request_id
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, None
            record.traceback = redact(text)
        return True


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing one redacted JSON object per record."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(RedactFilter())
    handler.set_name("micropay-json")
    return handler


def configure_logging(stream: IO[str] | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send all loggers to one JSON handler on the root logger (replacing an earlier one)."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "micropay-json":
            root.removeHandler(existing)
    handler = json_handler(stream)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    return handler


__all__ = [
    "LedgerCollector",
    "Metrics",
    "MetricsRuntime",
    "RedactFilter",
    "configure_logging",
    "count_deliveries",
    "json_handler",
    "operator_only",
    "redact",
    "request_id_var",
]
