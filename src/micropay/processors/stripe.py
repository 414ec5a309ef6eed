"""Stripe adapter for the ``Processor`` port: charges, refunds, payouts, signed events.

Why it is shaped this way:

- One ``StripeClient`` per adapter (never the SDK's module globals), so two
  adapters with different keys or base URLs can live in one process, and tests
  point it at a local fake Stripe server through ``api_base``.
- Every write carries the caller's idempotency key as Stripe's
  ``Idempotency-Key``: after ``Outcome.retry`` the caller retries with the same
  key and Stripe replays the first result, so a timeout after the charge
  happened can never become a second charge.
- Nothing is raised for a business outcome or a network/server failure; the
  mapping below turns them into ``Outcome`` values. Only programmer errors
  (an invalid request object, a key reused with a different request) raise.
- Messages and logs carry ids and error codes only: never card data, never
  Stripe's free-text messages (which may echo request parameters), never the
  API key or webhook secret. The SDK's own ``stripe`` logger writes whole
  request and response bodies at DEBUG: keep it at INFO or above in production.

Outcome mapping of a call:

==========================================  ==========================================
Stripe answers                               Outcome
==========================================  ==========================================
PaymentIntent ``succeeded``                  ``succeeded`` (charge_id = PaymentIntent id)
402 card error, ``requires_payment_method``  ``declined`` (decline_code from Stripe)
400/404 invalid request (no such customer,   ``declined`` (code, e.g. ``resource_missing``)
refund larger than what is left)
``processing``, ``requires_capture``         ``retry`` (outcome comes by event)
connection error, timeout                    ``retry``
429                                          ``retry`` with ``retry_after_s``
409 (same key in progress), 5xx              ``retry``
401/403 (bad key, missing permission)        ``retry`` (nothing happened; logged as error)
400 ``idempotency_error``                    raises ``IdempotencyKeyReused``
==========================================  ==========================================
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import stripe

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
    description_chars_max,
    idempotency_key_chars_max,
    metadata_entries_max,
)

if TYPE_CHECKING:
    from stripe.params import (
        PaymentIntentCreateParams,
        PayoutCreateParams,
        RefundCreateParams,
        TransferCreateParams,
    )

log = logging.getLogger(__name__)

# Stripe's docs, "Zero-decimal currencies" and "Three-decimal currencies".
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"}
    | {"PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
THREE_DECIMAL_CURRENCIES = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

timeout_s_min = 0.05
timeout_s_max = 120.0
network_retries_max = 5
event_tolerance_s_min = 1
event_tolerance_s_max = 3600
retry_after_s_max = 3600.0
event_payload_bytes_max = 1 << 20
signature_header_chars_max = 4096
amount_minor_max = 99_999_999_999  # above any single Stripe charge; keeps ints sane
IDEMPOTENCY_METADATA_KEY = "micropay_idempotency_key"

_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# A Stripe object id (cus_..., pm_..., pi_..., ba_..., acct_...): a prefix, never a bare number,
# so a card number passed by mistake is refused before it leaves the process.
_TOKEN_RE = re.compile(r"^[a-z]{1,8}_[A-Za-z0-9_]{1,246}$")

_EVENT_KINDS = {
    "payment_intent.succeeded": EventKind.charge_succeeded,
    "payment_intent.payment_failed": EventKind.charge_failed,
    "charge.refunded": EventKind.charge_refunded,
    "charge.dispute.created": EventKind.dispute_created,
    "charge.dispute.closed": EventKind.dispute_closed,
    "payout.paid": EventKind.payout_paid,
    "payout.failed": EventKind.payout_failed,
}


class IdempotencyKeyReused(ValueError):
    """The same idempotency key was sent with a different request: a bug in the caller.

    Raised rather than mapped to an outcome: the first request under this key may
    have moved money, so neither ``declined`` nor ``retry`` would be true.
    """


class StripeProcessor:
    """The ``Processor`` port over Stripe's API (PaymentIntents, Refunds, Payouts, Transfers)."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        webhook_secret: str,
        timeout_s: float = 30.0,
        max_network_retries: int = 0,
        event_tolerance_s: int = 300,
    ) -> None:
        if not api_key:
            raise ValueError("an API key is required")
        if not webhook_secret:
            raise ValueError("a webhook secret is required")
        if not timeout_s_min <= timeout_s <= timeout_s_max:
            raise ValueError(f"timeout_s must be between {timeout_s_min} and {timeout_s_max}")
        if not 0 <= max_network_retries <= network_retries_max:
            raise ValueError(f"max_network_retries must be between 0 and {network_retries_max}")
        if not event_tolerance_s_min <= event_tolerance_s <= event_tolerance_s_max:
            raise ValueError(
                f"event_tolerance_s must be between {event_tolerance_s_min} "
                f"and {event_tolerance_s_max}"
            )
        self._webhook_secret = webhook_secret
        self._event_tolerance_s = event_tolerance_s
        self._http_client = stripe.RequestsClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http_client,
        )

    def close(self) -> None:
        """Release pooled HTTP connections."""
        self._http_client.close()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:  # never show the key or secret
        return "StripeProcessor()"

    # --- amounts -------------------------------------------------------------------

    def minor_exponent(self, currency: str) -> int:
        """Decimals of Stripe's minor unit: 0 for zero-decimal, 3 for three-decimal, else 2."""
        code = _check_currency(currency)
        if code in ZERO_DECIMAL_CURRENCIES:
            return 0
        if code in THREE_DECIMAL_CURRENCIES:
            return 3
        return 2

    # --- charges -------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Create and confirm an off-session PaymentIntent; see the module table for outcomes."""
        _check_key(request.idempotency_key)
        _check_token(request.customer_token, "customer_token")
        _check_token(request.payment_method_token, "payment_method_token")
        _check_amount(request.amount_minor)
        currency = _check_currency(request.currency)
        if len(request.description) > description_chars_max:
            raise ValueError("description is too long")
        if len(request.metadata) > metadata_entries_max:
            raise ValueError("too many metadata entries")
        params: PaymentIntentCreateParams = {
            "amount": request.amount_minor,
            "currency": currency.lower(),
            "customer": request.customer_token,
            "payment_method": request.payment_method_token,
            "confirm": True,
            "off_session": True,
            "metadata": {**request.metadata, IDEMPOTENCY_METADATA_KEY: request.idempotency_key},
        }
        if request.description:
            params["description"] = request.description
        try:
            intent = self._client.v1.payment_intents.create(
                params, {"idempotency_key": request.idempotency_key}
            )
        except stripe.StripeError as err:
            failure = _classify(err, "charge", request.idempotency_key)
            if failure.outcome is Outcome.declined:
                return ChargeResult(
                    Outcome.declined,
                    charge_id=failure.object_id,
                    decline_code=failure.code,
                    message=failure.message,
                )
            return ChargeResult(
                Outcome.retry, message=failure.message, retry_after_s=failure.retry_after_s
            )
        return _charge_result(intent)

    # --- refunds -------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of a PaymentIntent; a refund beyond what is left is declined."""
        _check_key(request.idempotency_key)
        _check_token(request.charge_id, "charge_id")
        _check_amount(request.amount_minor)
        _check_currency(request.currency)
        params: RefundCreateParams = {
            "payment_intent": request.charge_id,
            "amount": request.amount_minor,
            "metadata": {IDEMPOTENCY_METADATA_KEY: request.idempotency_key},
        }
        try:
            refund = self._client.v1.refunds.create(
                params, {"idempotency_key": request.idempotency_key}
            )
        except stripe.StripeError as err:
            failure = _classify(err, "refund", request.idempotency_key)
            return RefundResult(failure.outcome, message=failure.message)
        status = str(refund.status or "")
        if status in ("succeeded", "pending"):
            return RefundResult(Outcome.succeeded, refund_id=refund.id, amount_minor=refund.amount)
        if status in ("failed", "canceled"):
            return RefundResult(
                Outcome.declined, refund_id=refund.id, message=f"refund {refund.id} is {status}"
            )
        return RefundResult(
            Outcome.retry, refund_id=refund.id, message=f"refund {refund.id} is {status}"
        )

    # --- payouts -------------------------------------------------------------------

    def payout(self, request: PayoutRequest) -> PayoutResult:
        """Pay out: a Transfer to a connected account (``acct_...``), else a Payout.

        A Payout goes from the platform's Stripe balance to ``destination_token``
        (a bank account or card of the platform's account, or the default one
        when empty). ``pending``/``in_transit``/``paid`` count as succeeded
        (scheduled); a later failure arrives as a ``payout.failed`` event.
        """
        _check_key(request.idempotency_key)
        if request.destination_token:
            _check_token(request.destination_token, "destination_token")
        _check_amount(request.amount_minor)
        currency = _check_currency(request.currency).lower()
        if len(request.description) > description_chars_max:
            raise ValueError("description is too long")
        options: stripe.RequestOptions = {"idempotency_key": request.idempotency_key}
        metadata = {IDEMPOTENCY_METADATA_KEY: request.idempotency_key}
        try:
            if request.destination_token.startswith("acct_"):
                transfer_params: TransferCreateParams = {
                    "amount": request.amount_minor,
                    "currency": currency,
                    "destination": request.destination_token,
                    "metadata": metadata,
                }
                if request.description:
                    transfer_params["description"] = request.description
                transfer = self._client.v1.transfers.create(transfer_params, options)
                return PayoutResult(
                    Outcome.succeeded, payout_id=transfer.id, amount_minor=transfer.amount
                )
            payout_params: PayoutCreateParams = {
                "amount": request.amount_minor,
                "currency": currency,
                "metadata": metadata,
            }
            if request.destination_token:
                payout_params["destination"] = request.destination_token
            if request.description:
                payout_params["description"] = request.description
            payout = self._client.v1.payouts.create(payout_params, options)
        except stripe.StripeError as err:
            failure = _classify(err, "payout", request.idempotency_key)
            return PayoutResult(failure.outcome, message=failure.message)
        status = str(payout.status or "")
        if status in ("pending", "in_transit", "paid"):
            return PayoutResult(Outcome.succeeded, payout_id=payout.id, amount_minor=payout.amount)
        return PayoutResult(
            Outcome.declined, payout_id=payout.id, message=f"payout {payout.id} is {status}"
        )

    # --- events --------------------------------------------------------------------

    def verify_event(self, payload: bytes, signature_header: str, now_s: int) -> ProcessorEvent:
        """Check a ``Stripe-Signature`` header and the event's age, then parse the event.

        Rejected (``EventRejected``): no header; a header that is not
        ``t=<int>,v1=<hex>[,v1=...]``; no ``v1`` signature matching the HMAC-SHA256
        of ``"{t}.{payload}"`` under the webhook secret; a timestamp more than
        ``event_tolerance_s`` before or after ``now_s``; a payload that is not a
        Stripe event. Any one of several ``v1`` signatures may match (secret
        rotation).
        """
        if not signature_header:
            raise EventRejected("missing Stripe-Signature header")
        if len(signature_header) > signature_header_chars_max:
            raise EventRejected("Stripe-Signature header is too long")
        if len(payload) > event_payload_bytes_max:
            raise EventRejected("event payload is too large")
        timestamp_s = _parse_signature_header(signature_header)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise EventRejected("event payload is not UTF-8") from None
        try:
            stripe.WebhookSignature.verify_header(
                text, signature_header, self._webhook_secret, tolerance=None
            )
        except stripe.SignatureVerificationError:
            raise EventRejected("no signature matches the payload") from None
        if timestamp_s < now_s - self._event_tolerance_s:
            raise EventRejected("event timestamp is older than the tolerance")
        if timestamp_s > now_s + self._event_tolerance_s:
            raise EventRejected("event timestamp is in the future beyond the tolerance")
        return _parse_event(text)


# --- helpers ---------------------------------------------------------------------------


class _Failure:
    __slots__ = ("code", "message", "object_id", "outcome", "retry_after_s")

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        code: str = "",
        object_id: str = "",
        retry_after_s: float = 0.0,
    ) -> None:
        self.outcome = outcome
        self.message = message
        self.code = code
        self.object_id = object_id
        self.retry_after_s = retry_after_s


def _classify(err: stripe.StripeError, what: str, key: str) -> _Failure:
    """Map an SDK error to an outcome. Uses only status, type, codes and ids."""
    status = err.http_status or 0
    request_id = _safe_id(err.request_id)
    suffix = f" (request {request_id})" if request_id else ""
    if isinstance(err, stripe.IdempotencyError):
        log.error("stripe %s: idempotency key reused with a different request", what)
        raise IdempotencyKeyReused(
            f"{what}: idempotency key was already used with a different request{suffix}"
        ) from None
    if isinstance(err, stripe.APIConnectionError):
        log.warning("stripe %s: connection failed or timed out; retry with the same key", what)
        return _Failure(Outcome.retry, f"{what}: no answer from Stripe (connection or timeout)")
    if isinstance(err, stripe.RateLimitError):
        retry_after_s = _retry_after_s(err.headers)
        log.warning("stripe %s: rate limited%s", what, suffix)
        return _Failure(
            Outcome.retry, f"{what}: rate limited by Stripe{suffix}", retry_after_s=retry_after_s
        )
    if isinstance(err, stripe.AuthenticationError | stripe.PermissionError):
        log.error("stripe %s: HTTP %d, the API key is invalid or lacks permission", what, status)
        return _Failure(Outcome.retry, f"{what}: Stripe refused the API key (HTTP {status})")
    body = _error_body(err)
    code = _safe_code(body.get("decline_code")) or _safe_code(body.get("code"))
    if isinstance(err, stripe.CardError):
        code = code or "card_declined"
        object_id = _declined_object_id(body)
        log.info("stripe %s declined: %s%s", what, code, suffix)
        return _Failure(Outcome.declined, f"{what} declined: {code}{suffix}", code, object_id)
    if isinstance(err, stripe.InvalidRequestError) and status in (400, 404):
        code = code or ("resource_missing" if status == 404 else "invalid_request")
        log.info("stripe %s refused: %s%s", what, code, suffix)
        return _Failure(Outcome.declined, f"{what} refused by Stripe: {code}{suffix}", code)
    # 409 (same key still in progress), 5xx and anything unexpected: not known to have happened.
    log.warning("stripe %s: HTTP %d; retry with the same key", what, status)
    return _Failure(Outcome.retry, f"{what}: Stripe answered HTTP {status}{suffix}")


def _charge_result(intent: Any) -> ChargeResult:
    status = str(intent.status or "")
    if status == "succeeded":
        return ChargeResult(Outcome.succeeded, charge_id=intent.id, amount_minor=intent.amount)
    if status in ("requires_payment_method", "requires_action", "canceled"):
        error = _to_dict(intent.to_dict().get("last_payment_error"))
        code = (
            _safe_code(error.get("decline_code"))
            or _safe_code(error.get("code"))
            or ("authentication_required" if status == "requires_action" else status)
        )
        return ChargeResult(
            Outcome.declined,
            charge_id=intent.id,
            decline_code=code,
            message=f"charge {intent.id} declined: {code}",
        )
    # processing, requires_capture, requires_confirmation: the outcome arrives later by event.
    return ChargeResult(
        Outcome.retry, charge_id=intent.id, message=f"charge {intent.id} is {status}"
    )


def _parse_signature_header(header: str) -> int:
    timestamps: list[str] = []
    signatures = 0
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not value:
            raise EventRejected("malformed Stripe-Signature header")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures += 1
    if len(timestamps) != 1 or not timestamps[0].isdigit() or len(timestamps[0]) > 12:
        raise EventRejected("malformed Stripe-Signature header: needs exactly one t=<seconds>")
    if signatures == 0:
        raise EventRejected("malformed Stripe-Signature header: no v1 signature")
    return int(timestamps[0])


def _parse_event(text: str) -> ProcessorEvent:
    try:
        event = json.loads(text)
    except ValueError:
        raise EventRejected("event payload is not JSON") from None
    if not isinstance(event, dict) or event.get("object", "event") != "event":
        raise EventRejected("payload is not a Stripe event")
    event_id = event.get("id")
    event_type = event.get("type")
    created_s = event.get("created")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if (
        not isinstance(event_id, str)
        or not event_id
        or not isinstance(event_type, str)
        or not isinstance(created_s, int)
        or isinstance(created_s, bool)
        or not isinstance(obj, dict)
    ):
        raise EventRejected("payload is not a Stripe event")
    kind = _EVENT_KINDS.get(event_type, EventKind.other)
    object_id = _str(obj.get("id"))
    if kind in (EventKind.charge_succeeded, EventKind.charge_failed):
        charge_id = object_id
        amount = obj.get("amount_received") or obj.get("amount")
    elif kind is EventKind.charge_refunded:
        charge_id = _str(obj.get("payment_intent")) or object_id
        amount = obj.get("amount_refunded")
    elif kind in (EventKind.dispute_created, EventKind.dispute_closed):
        charge_id = _str(obj.get("payment_intent")) or _str(obj.get("charge"))
        amount = obj.get("amount")
    else:
        charge_id = ""
        amount = obj.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool):
        amount = 0
    return ProcessorEvent(
        event_id=event_id,
        kind=kind,
        created_s=created_s,
        object_id=object_id,
        charge_id=charge_id,
        amount_minor=amount,
        currency=_str(obj.get("currency")).upper(),
        status=_str(obj.get("status")),
    )


def _check_key(key: str) -> None:
    if not key or len(key) > idempotency_key_chars_max:
        raise ValueError(f"idempotency_key must be 1 to {idempotency_key_chars_max} characters")


def _check_token(token: str, what: str) -> None:
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise ValueError(f"{what} is not a processor token")


def _check_amount(amount_minor: int) -> None:
    if type(amount_minor) is not int or not 0 < amount_minor <= amount_minor_max:
        raise ValueError("amount_minor must be a positive int")


def _check_currency(currency: str) -> str:
    if not isinstance(currency, str) or not _CURRENCY_RE.fullmatch(currency.upper()):
        raise ValueError("currency must be a three-letter ISO code")
    return currency.upper()


def _retry_after_s(headers: Mapping[str, str] | None) -> float:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                seconds = float(value)
            except ValueError:
                return 0.0  # an HTTP date: let the caller's backoff decide
            if not math.isfinite(seconds) or seconds < 0:
                return 0.0
            return min(seconds, retry_after_s_max)
    return 0.0


def _error_body(err: stripe.StripeError) -> dict[str, Any]:
    body = err.json_body if isinstance(err.json_body, dict) else {}
    return _to_dict(body.get("error"))


def _declined_object_id(body: Mapping[str, Any]) -> str:
    """The declined PaymentIntent's id when Stripe names it (our charge ids are PaymentIntents)."""
    intent = body.get("payment_intent")
    if isinstance(intent, Mapping):
        return _safe_id(intent.get("id"))
    return ""


def _to_dict(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _safe_code(value: object) -> str:
    """A Stripe error code (``card_declined``), or "" if it does not look like one."""
    if isinstance(value, str) and re.fullmatch(r"[a-z_]{1,64}", value):
        return value
    return ""


def _safe_id(value: object) -> str:
    """A Stripe object/request id (``pi_...``, ``req_...``), or "" if it does not look like one."""
    if isinstance(value, str) and re.fullmatch(r"[a-z]{1,8}_[A-Za-z0-9_]{1,64}", value):
        return value
    return ""


if TYPE_CHECKING:
    from micropay.service.ports import Processor

    def _conforms_to_the_port(processor: StripeProcessor) -> Processor:
        return processor
