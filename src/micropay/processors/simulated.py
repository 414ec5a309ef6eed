"""A simulated card processor for the demo, simulations and tests.

It charges real fee schedules, honours idempotency keys like Stripe (the same
key returns the first result), and injects faults on demand: declines for
chosen payment methods, and at a seeded rate timeouts *after* the charge
happened, resets before it, 500s and 429s. ``succeeded_charges()`` is the
processor's own record, which reconcile compares with the ledger.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
from dataclasses import dataclass, field

from micropay.core.currencies import currency_exponent
from micropay.payments.processor import (
    ChargeRequest,
    ChargeResult,
    EventKind,
    EventRejected,
    Outcome,
    PayoutRequest,
    PayoutResult,
    ProcessorEvent,
    RefundRequest,
    RefundResult,
)

DECLINING_PAYMENT_METHOD = "pm_sim_declines"


@dataclass
class Faults:
    """Rates (0..1) of each fault, drawn from a seeded generator."""

    timeout_after_charge: float = 0.0
    reset_before_charge: float = 0.0
    server_error: float = 0.0
    rate_limited: float = 0.0
    seed: int = 0
    declining_methods: set[str] = field(default_factory=lambda: {DECLINING_PAYMENT_METHOD})


class SimulatedProcessor:
    name = "simulated"

    def __init__(self, faults: Faults | None = None, webhook_secret: str = "whsec_sim") -> None:
        self.faults = faults or Faults()
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._charges: dict[str, ChargeResult] = {}  # idempotency key -> first result
        self._charge_amounts: dict[str, tuple[int, str]] = {}  # charge id -> (minor, currency)
        self._refunds: dict[str, RefundResult] = {}
        self._refunded: dict[str, int] = {}
        self._payouts: dict[str, PayoutResult] = {}
        self._payout_currency: dict[str, str] = {}
        self._secret = webhook_secret.encode()
        self.calls = 0

    def minor_exponent(self, currency: str) -> int:
        return currency_exponent(currency)

    def _fault(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def charge(self, request: ChargeRequest) -> ChargeResult:
        with self._lock:
            self.calls += 1
            first = self._charges.get(request.idempotency_key)
            if first is not None:
                return first
            if self._fault(self.faults.reset_before_charge):
                return ChargeResult(Outcome.retry, message="connection reset")
            if self._fault(self.faults.server_error):
                return ChargeResult(Outcome.retry, message="processor error 500")
            if self._fault(self.faults.rate_limited):
                return ChargeResult(Outcome.retry, message="rate limited", retry_after_s=1.0)
            if request.amount_minor <= 0:
                result = ChargeResult(Outcome.declined, decline_code="invalid_amount")
            elif request.payment_method_token in self.faults.declining_methods:
                result = ChargeResult(Outcome.declined, decline_code="card_declined")
            else:
                charge_id = f"ch_sim_{len(self._charge_amounts) + 1:08d}"
                self._charge_amounts[charge_id] = (request.amount_minor, request.currency)
                result = ChargeResult(Outcome.succeeded, charge_id, request.amount_minor)
            self._charges[request.idempotency_key] = result
            if result.outcome is Outcome.succeeded and self._fault(
                self.faults.timeout_after_charge
            ):
                return ChargeResult(Outcome.retry, message="timed out after the charge")
            return result

    def refund(self, request: RefundRequest) -> RefundResult:
        with self._lock:
            self.calls += 1
            first = self._refunds.get(request.idempotency_key)
            if first is not None:
                return first
            captured = self._charge_amounts.get(request.charge_id)
            already = self._refunded.get(request.charge_id, 0)
            if captured is None or already + request.amount_minor > captured[0]:
                result = RefundResult(Outcome.declined, message="refund exceeds the charge")
            else:
                self._refunded[request.charge_id] = already + request.amount_minor
                refund_id = f"re_sim_{len(self._refunds) + 1:08d}"
                result = RefundResult(Outcome.succeeded, refund_id, request.amount_minor)
            self._refunds[request.idempotency_key] = result
            return result

    def payout(self, request: PayoutRequest) -> PayoutResult:
        with self._lock:
            self.calls += 1
            first = self._payouts.get(request.idempotency_key)
            if first is None:
                payout_id = f"po_sim_{len(self._payouts) + 1:08d}"
                first = PayoutResult(Outcome.succeeded, payout_id, request.amount_minor)
                self._payouts[request.idempotency_key] = first
                self._payout_currency[request.idempotency_key] = request.currency
            return first

    def succeeded_payouts(self) -> dict[str, tuple[int, str]]:
        """payout id -> (amount in minor units, currency): the rail's own books of payouts."""
        with self._lock:
            return {
                r.payout_id: (r.amount_minor, self._payout_currency[key])
                for key, r in self._payouts.items()
                if r.outcome is Outcome.succeeded
            }

    def succeeded_charges(self) -> dict[str, tuple[int, str]]:
        """charge id -> (amount in minor units, currency): the processor's own books."""
        with self._lock:
            return dict(self._charge_amounts)

    def sign_event(self, payload: bytes, timestamp_s: int) -> str:
        mac = hmac.new(self._secret, f"{timestamp_s}.".encode() + payload, hashlib.sha256)
        return f"t={timestamp_s},v1={mac.hexdigest()}"

    def verify_event(self, payload: bytes, signature_header: str, now_s: int) -> ProcessorEvent:
        parts = dict(p.split("=", 1) for p in signature_header.split(",") if "=" in p)
        try:
            timestamp_s = int(parts["t"])
        except (KeyError, ValueError):
            raise EventRejected("missing or malformed signature header") from None
        if abs(now_s - timestamp_s) > 300:
            raise EventRejected("event timestamp outside the tolerance")
        expected = self.sign_event(payload, timestamp_s).split("v1=", 1)[1]
        if not hmac.compare_digest(expected, parts.get("v1", "")):
            raise EventRejected("signature does not match")
        try:
            body = json.loads(payload)
            return ProcessorEvent(
                event_id=str(body["id"]),
                kind=EventKind(body["kind"]),
                created_s=timestamp_s,
                object_id=str(body["object_id"]),
                charge_id=str(body.get("charge_id", "")),
                amount_minor=int(body.get("amount_minor", 0)),
                currency=str(body.get("currency", "")),
                status=str(body.get("status", "")),
            )
        except (ValueError, KeyError, TypeError):
            raise EventRejected("event body is not a valid event") from None
