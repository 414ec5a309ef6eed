"""One error envelope, and ONE table from domain statuses to HTTP.

Every refusal the API returns looks like::

    {"error": {"code": "insufficient_funds", "message": "...", "request_id": "req_..."}}

``code`` is stable: it is the domain status's value (or an API-level code
below), so clients can branch on it. A test checks that every member of every
status enum has a row in :data:`STATUS_HTTP`.
"""

from __future__ import annotations

import enum
import json

from micropay.core.statuses import TransferStatus
from micropay.payments.billing import SubscriptionStatus, TipStatus, UsageStatus
from micropay.payments.gift_cards import IssueStatus, RedeemStatus
from micropay.payments.models import PurchaseStatus, TopUpStatus
from micropay.service.refunds import RefundStatus

_T = TransferStatus
_P = PurchaseStatus
_U = TopUpStatus
_R = RefundStatus
_I = IssueStatus
_G = RedeemStatus
_S = SubscriptionStatus
_M = UsageStatus
_N = TipStatus

# (HTTP status, a message for clients). 2xx rows are successes.
STATUS_HTTP: dict[enum.Enum, tuple[int, str]] = {
    # purchases
    _P.ok: (201, "purchased"),
    _P.already_entitled: (200, "already owned: the first receipt"),
    _P.charge_pending: (202, "the processor has not answered; retry with the same key"),
    _P.merchant_not_found: (404, "merchant not found"),
    _P.customer_not_found: (404, "customer not found"),
    _P.item_not_found: (404, "item not found"),
    _P.currency_not_sold: (422, "this item is not sold in that currency"),
    _P.price_invalid: (409, "the price is not the catalogue price"),
    _P.idempotency_key_invalid: (400, "the idempotency key is invalid"),
    _P.idempotency_key_reused: (409, "this key was used for a different request"),
    _P.tab_frozen: (402, "the customer's tab is frozen until paid"),
    _P.insufficient_funds: (402, "no funding source can pay"),
    _P.fee_guard_refused: (402, "a direct charge would cost too much in fees"),
    _P.no_payment_method: (402, "the customer has no payment method"),
    _P.charge_declined: (402, "the card was declined"),
    # top-ups
    _U.ok: (201, "topped up"),
    _U.charge_pending: (202, "the processor has not answered; retry with the same key"),
    _U.customer_not_found: (404, "customer not found"),
    _U.amount_below_minimum: (422, "the amount is below the top-up minimum"),
    _U.amount_above_maximum: (422, "the amount is above the top-up maximum"),
    _U.amount_invalid: (422, "the amount must be a positive integer of micros"),
    _U.currency_invalid: (422, "unknown currency"),
    _U.not_whole_minor_units: (422, "the amount must be whole minor units (e.g. cents)"),
    _U.no_payment_method: (402, "the customer has no payment method"),
    _U.charge_declined: (402, "the card was declined"),
    _U.idempotency_key_invalid: (400, "the idempotency key is invalid"),
    _U.idempotency_key_reused: (409, "this key was used for a different request"),
    # refunds
    # store credit: issue
    _I.ok: (201, "issued: the codes are shown once"),
    _I.count_invalid: (422, "count must be 1..1,000"),
    _I.value_invalid: (422, "value must be a positive integer of micros"),
    _I.currency_invalid: (422, "unknown currency"),
    _I.expiry_invalid: (422, "expiry must be in the future"),
    _I.merchant_not_found: (404, "merchant not found"),
    _I.merchant_funds_insufficient: (402, "the merchant's earnings do not cover this credit"),
    _I.idempotency_key_invalid: (400, "the idempotency key is invalid"),
    _I.idempotency_key_reused: (409, "this key was used for a different request"),
    # store credit and gift cards: redeem at a point of sale
    _G.ok: (201, "redeemed"),
    _G.idempotency_key_invalid: (400, "the idempotency key is invalid"),
    _G.amount_invalid: (422, "the amount must be a positive integer of micros"),
    # A mistyped code names no card: 404, with its own code so a till can say "check it".
    _G.code_malformed: (404, "no card with this code: it looks mistyped (check symbol)"),
    _G.idempotency_key_reused: (409, "this key was used for a different request"),
    _G.customer_not_found: (404, "customer not found"),
    _G.merchant_not_found: (404, "merchant not found"),
    _G.too_many_attempts: (429, "too many unknown codes: try again later"),
    _G.code_not_found: (404, "no card with this code"),
    _G.card_expired: (409, "the card has expired"),
    _G.card_spent: (409, "nothing is left on the card"),
    _G.currency_mismatch: (422, "the card is in another currency"),
    _G.wrong_merchant: (403, "this store credit is only valid at the merchant that issued it"),
    _G.store_credit_unavailable: (409, "store credit is not available for this account"),
    _G.amount_above_remaining: (409, "the amount is more than is left on the card"),
    _R.ok: (201, "refunded"),
    _R.pending: (202, "the processor has not answered; retry with the same key"),
    _R.purchase_not_found: (404, "purchase not found"),
    _R.purchase_not_paid: (409, "the purchase is not paid"),
    _R.amount_invalid: (422, "the amount must be a positive integer of micros"),
    _R.exceeds_refundable: (409, "the amount exceeds what is left to refund"),
    _R.destination_invalid: (422, "unknown refund destination"),
    _R.idempotency_key_invalid: (400, "the idempotency key is invalid"),
    _R.idempotency_key_reused: (409, "this key was used for a different request"),
    _R.declined: (402, "the processor declined the refund"),
    # subscriptions
    _S.ok: (201, "subscribed: the first period is paid"),
    _S.merchant_not_found: (404, "merchant not found"),
    _S.customer_not_found: (404, "customer not found"),
    _S.plan_not_found: (404, "plan not found"),
    _S.subscription_not_found: (404, "subscription not found"),
    _S.currency_not_sold: (422, "this plan is not sold in the customer's currency"),
    _S.time_zone_invalid: (422, "unknown time zone"),
    _S.idempotency_key_invalid: (400, "the idempotency key is invalid"),
    _S.idempotency_key_reused: (409, "this key was used for a different request"),
    _S.already_cancelled: (409, "the subscription is already cancelled"),
    _S.no_prepaid_source: (402, "subscriptions are paid from a wallet or tab: neither is allowed"),
    _S.tab_frozen: (402, "the customer's tab is frozen until paid"),
    _S.insufficient_funds: (402, "neither the wallet nor the tab can pay"),
    # usage events
    _M.ok: (201, "recorded"),
    _M.merchant_not_found: (404, "merchant not found"),
    _M.customer_not_found: (404, "customer not found"),
    _M.meter_not_found: (404, "meter not found"),
    _M.currency_not_sold: (422, "this meter is not priced in the customer's currency"),
    _M.quantity_invalid: (422, "quantity must be an integer of 1 .. 1,000,000"),
    _M.idempotency_key_invalid: (400, "the idempotency key is invalid"),
    _M.idempotency_key_reused: (409, "this key was used for a different request"),
    _M.batch_too_large: (422, "too many events in one call"),
    # tips
    _N.ok: (201, "tipped"),
    _N.merchant_not_found: (404, "merchant not found"),
    _N.customer_not_found: (404, "customer not found"),
    _N.item_not_found: (404, "item not found"),
    _N.currency_not_sold: (422, "this merchant is not tipped in that currency"),
    _N.amount_invalid: (422, "the amount must be a positive integer of micros"),
    _N.amount_below_minimum: (422, "the tip is below the merchant's minimum"),
    _N.amount_above_maximum: (422, "the tip is above the merchant's maximum"),
    _N.note_invalid: (422, "a note is at most 280 printable characters"),
    _N.idempotency_key_invalid: (400, "the idempotency key is invalid"),
    _N.idempotency_key_reused: (409, "this key was used for a different request"),
    _N.no_prepaid_source: (409, "the merchant takes neither wallet nor tab"),
    _N.tab_frozen: (402, "the customer's tab is frozen until paid"),
    _N.insufficient_funds: (402, "no funding source can pay"),
    # ledger transfers: request checks are 422, state checks 409, balances 402
    _T.ok: (201, "transferred"),
    _T.linked_event_failed: (409, "a linked transfer failed"),
    _T.linked_event_chain_open: (422, "the linked chain is not closed"),
    _T.id_must_be_positive: (422, "id must be positive"),
    _T.id_must_not_exceed_max: (422, "id too large"),
    _T.id_reserved_for_system: (422, "id reserved for the system"),
    _T.flags_are_unknown: (422, "unknown flags"),
    _T.flags_are_mutually_exclusive: (422, "flags are mutually exclusive"),
    _T.expire_reserved_for_system: (422, "expiry is reserved for the system"),
    _T.debit_account_id_must_be_positive: (422, "debit account id must be positive"),
    _T.credit_account_id_must_be_positive: (422, "credit account id must be positive"),
    _T.accounts_must_be_different: (422, "accounts must be different"),
    _T.pending_id_must_be_zero: (422, "pending id must be zero"),
    _T.pending_id_must_be_positive: (422, "pending id must be positive"),
    _T.pending_id_must_be_different: (422, "pending id must differ from id"),
    _T.timeout_reserved_for_pending_transfer: (422, "timeout is for pending transfers"),
    _T.timeout_must_be_in_range: (422, "timeout out of range"),
    _T.amount_must_be_an_int: (422, "amount must be an integer of micros"),
    _T.amount_must_be_positive: (422, "amount must be positive"),
    _T.amount_exceeds_max: (422, "amount too large"),
    _T.currency_must_be_valid: (422, "unknown currency"),
    _T.code_must_be_in_range: (422, "code out of range"),
    _T.text_must_be_valid: (422, "text must be printable"),
    _T.reference_too_long: (422, "reference too long"),
    _T.metadata_too_large: (422, "metadata too large"),
    _T.id_already_used_with_different_request: (409, "id used for a different request"),
    _T.pending_transfer_not_found: (404, "pending transfer not found"),
    _T.pending_transfer_not_pending: (409, "not a pending transfer"),
    _T.pending_transfer_has_different_debit_account_id: (409, "hold has another debit account"),
    _T.pending_transfer_has_different_credit_account_id: (409, "hold has another credit account"),
    _T.pending_transfer_has_different_currency: (409, "pending transfer has another currency"),
    _T.exceeds_pending_transfer_amount: (409, "exceeds the pending amount"),
    _T.pending_transfer_has_different_amount: (409, "pending transfer has another amount"),
    _T.pending_transfer_already_posted: (409, "pending transfer already posted"),
    _T.pending_transfer_already_voided: (409, "pending transfer already voided"),
    _T.pending_transfer_expired: (409, "pending transfer expired"),
    _T.pending_transfer_not_expired: (409, "pending transfer not expired"),
    _T.debit_account_not_found: (404, "debit account not found"),
    _T.credit_account_not_found: (404, "credit account not found"),
    _T.transfer_must_have_the_same_currency_as_accounts: (422, "currency differs from accounts'"),
    _T.accounts_must_have_the_same_currency: (422, "accounts have different currencies"),
    _T.overflows_debits_pending: (409, "would overflow pending debits"),
    _T.overflows_credits_pending: (409, "would overflow pending credits"),
    _T.overflows_debits_posted: (409, "would overflow posted debits"),
    _T.overflows_credits_posted: (409, "would overflow posted credits"),
    _T.overflows_debits: (409, "would overflow debits"),
    _T.overflows_credits: (409, "would overflow credits"),
    _T.overflows_timeout: (409, "would overflow the timeout"),
    _T.exceeds_credits: (402, "insufficient funds"),
    _T.exceeds_debits: (409, "exceeds debits"),
}

# Refusals made by the API layer itself (no domain status behind them).
API_ERRORS: dict[str, int] = {
    "malformed_json": 400,
    "idempotency_key_missing": 400,
    "idempotency_key_invalid": 400,
    "invalid_cursor": 400,
    "authentication_required": 401,
    "api_key_invalid": 401,
    "api_key_revoked": 401,
    "event_signature_invalid": 401,
    "key_scope_insufficient": 403,
    "mode_mismatch": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "idempotency_key_reused": 409,
    "idempotency_request_in_progress": 409,
    "event_deferred": 409,
    # webhook endpoints (micropay.webhooks.EndpointRefusal) and their deliveries
    "url_invalid": 422,
    "url_refused": 403,
    "events_invalid": 422,
    "too_many_endpoints": 409,
    "delivery_pending": 409,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "validation_failed": 422,
    "rate_limited": 429,
    "internal_error": 500,
}


class ApiError(Exception):
    """A refusal to answer in the envelope; raised anywhere below a route."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        if status is None and code not in API_ERRORS:
            raise KeyError(f"unknown API error code {code!r}")
        self.code = code
        self.message = message
        self.status = API_ERRORS[code] if status is None else status
        self.headers = headers or {}

    @classmethod
    def from_status(cls, status: enum.Enum, message: str = "") -> ApiError:
        http, default = STATUS_HTTP[status]
        if http < 400:
            raise ValueError(f"{status} is not a refusal")
        return cls(str(status.value), message or default, status=http)


def envelope(code: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "request_id": request_id}},
        separators=(",", ":"),
    ).encode()
