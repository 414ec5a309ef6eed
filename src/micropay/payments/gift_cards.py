"""Gift cards, vouchers and merchant store credit: code format, outcomes and plans. Pure.

**Codes.** 80 random bits (passed in: randomness belongs to the service) written
as 16 Crockford base32 symbols in four groups, then one check symbol::

    7K3M-Q0ZD-X4TN-8RWA-F

The check symbol makes the code a word of a linear code over GF(32): with the
data symbols ``x1..x16`` (values 0..31) and the check symbol ``c``,
``c = sum(alpha**i * x_i)`` in GF(32) (``alpha`` a primitive element, so the 17
weights ``1, alpha, .., alpha**16`` are distinct and non-zero). Hence:

- a single wrong symbol anywhere (check symbol included) changes the sum by
  ``w * d`` with ``w, d`` non-zero: always caught;
- two swapped neighbours ``a, b`` change it by ``(w_i + w_j) * (a + b)``, non-zero
  since the weights differ and ``a != b``: always caught.

(A Luhn mod N digit misses some transpositions; Crockford's own mod-37 check
needs five extra symbols that are hard to read aloud.) Parsing is forgiving the
way Crockford base32 is: case, hyphens and spaces are ignored, ``O`` reads as
``0`` and ``I``/``L`` as ``1``.

**Accounting.** Each card has its own ledger account (kind
``gift_card_liability``, owner platform, owner id = the card's sequential
number, flag debits-must-not-exceed-credits), so the ledger itself holds each
card's remaining value exactly and refuses to overspend it; the sum of the
per-card accounts is the gift card liability. Plans:

| event | debit | credit |
|---|---|---|
| issue a platform card / voucher | ``gift_card_funding`` | card |
| issue merchant store credit | the merchant's payable (the merchant funds it) | card |
| redeem a platform card into a wallet | card | customer wallet |
| redeem store credit for a customer | card | store credit (customer x merchant) |
| spend a card at a point of sale | card | the merchant's payable |
| expire a platform card | card | ``breakage_income`` |
| expire store credit | card | the issuing merchant's payable (its own breakage) |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from micropay.core.accounts import AccountFlags, NewAccount
from micropay.core.transfers import Transfer
from micropay.payments import chart, plans
from micropay.payments.chart import Kind, Owner

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}
_VALUE.update({"O": 0, "I": 1, "L": 1})
code_random_bits = 80
code_data_symbols = code_random_bits // 5  # 16
code_group_symbols = 4
code_chars_max = 64  # longest input accepted before parsing (spaces and hyphens)

gift_card_batch_max = 1_000  # cards per issuance call (one database transaction)
gift_card_value_micros_max = 10_000 * 1_000_000  # 10,000 units per card
gift_card_failed_attempts_max = 10  # unknown codes per customer or till per window
gift_card_attempt_window_s = 3_600
gift_card_expiries_per_run_max = 1_000
card_number_max = chart.owner_id_max  # a card's number is its ledger owner id (36 bits)


# Gift card transfer codes live with all others in ``payments.plans.Code``.
Code = plans.Code


class CardKind(enum.Enum):
    platform = "platform"  # a gift card or voucher: any customer's wallet, any merchant
    store_credit = "store_credit"  # spendable only at the issuing merchant


class IssueStatus(enum.Enum):
    """Outcome of issuing a batch; every refusal writes nothing."""

    ok = "ok"
    count_invalid = "count_invalid"  # not 1..gift_card_batch_max
    value_invalid = "value_invalid"
    currency_invalid = "currency_invalid"
    expiry_invalid = "expiry_invalid"  # not after now
    merchant_not_found = "merchant_not_found"
    merchant_funds_insufficient = "merchant_funds_insufficient"
    idempotency_key_invalid = "idempotency_key_invalid"
    idempotency_key_reused = "idempotency_key_reused"


class RedeemStatus(enum.Enum):
    """Outcome of a redemption, in order of precedence; every refusal writes nothing
    (except ``code_not_found``, which counts one failed attempt towards the rate limit)."""

    ok = "ok"
    idempotency_key_invalid = "idempotency_key_invalid"
    amount_invalid = "amount_invalid"
    code_malformed = "code_malformed"  # wrong length, symbol or check symbol: a typo
    idempotency_key_reused = "idempotency_key_reused"  # same key, different request
    customer_not_found = "customer_not_found"
    merchant_not_found = "merchant_not_found"
    too_many_attempts = "too_many_attempts"
    code_not_found = "code_not_found"
    card_expired = "card_expired"
    card_spent = "card_spent"  # nothing left on the card
    currency_mismatch = "currency_mismatch"
    wrong_merchant = "wrong_merchant"  # store credit offered at another merchant
    store_credit_unavailable = "store_credit_unavailable"  # party numbers too large
    amount_above_remaining = "amount_above_remaining"


# --- GF(32) arithmetic and the check symbol ----------------------------------

_POLY = 0b100101  # x^5 + x^2 + 1, primitive
_EXP: list[int] = []
_e = 1
for _ in range(31):
    _EXP.append(_e)
    _e <<= 1
    if _e & 0b100000:
        _e ^= _POLY
if len(set(_EXP)) != 31:  # pragma: no cover - a wrong polynomial is a programmer error
    raise RuntimeError("GF(32) generator is not primitive")
_LOG = {v: i for i, v in enumerate(_EXP)}


def _mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[(_LOG[a] + _LOG[b]) % 31]


def check_symbol_value(data: list[int]) -> int:
    """The check value of 16 data values: ``sum(alpha**i * x_i)``, i = 1..16, in GF(32)."""
    total = 0
    for i, x in enumerate(data, start=1):
        total ^= _mul(_EXP[i % 31], x)
    return total


def format_code(random_bits: int) -> str:
    """The printed code of an 80-bit integer: ``XXXX-XXXX-XXXX-XXXX-C``."""
    if type(random_bits) is not int or not 0 <= random_bits < 1 << code_random_bits:
        raise ValueError("a code needs an 80-bit non-negative int")
    data = [(random_bits >> (5 * (code_data_symbols - 1 - i))) & 31 for i in range(16)]
    symbols = "".join(ALPHABET[x] for x in data)
    groups = [symbols[i : i + code_group_symbols] for i in range(0, 16, code_group_symbols)]
    return "-".join([*groups, ALPHABET[check_symbol_value(data)]])


def parse_code(text: object) -> str | None:
    """The canonical code (17 symbols, no hyphens) if ``text`` is a well-formed code, else None."""
    if not isinstance(text, str) or len(text) > code_chars_max:
        return None
    values: list[int] = []
    for ch in text.upper():
        if ch in "- ":
            continue
        value = _VALUE.get(ch)
        if value is None:
            return None
        values.append(value)
    if len(values) != code_data_symbols + 1:
        return None
    if check_symbol_value(values[:-1]) != values[-1]:
        return None
    return "".join(ALPHABET[v] for v in values)


# --- cards and plans ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GiftCard:
    """A card as stored: never its code, only a hash of it. Its value lives in the ledger."""

    id: int  # sequential card number, 1..card_number_max
    batch_id: int
    code_hash: str
    kind: CardKind
    merchant_id: int  # issuing merchant of store credit; 0 for platform cards
    currency: str
    value_micros: int  # face value at issue
    expires_at_us: int  # 0: never
    expired: bool  # the expiry job has moved the rest to breakage
    created_at_us: int


@dataclass(frozen=True, slots=True)
class RedemptionRecord:
    """Value that left a card under an idempotency key of a customer or a merchant's till."""

    id: int
    card_id: int
    actor: str  # "customer" | "merchant"
    actor_id: int
    idempotency_key: str
    request_hash: str
    amount_micros: int
    remaining_micros: int  # left on the card right after this redemption
    credit_account_id: int
    transfer_id: int
    created_at_us: int


def card_account_id(card_id: int, currency: str) -> int:
    return chart.account_id(Owner.platform, card_id, Kind.gift_card_liability, currency)


def card_account(card_id: int, currency: str) -> NewAccount:
    """The card's own liability account: it can never be spent below zero."""
    if not 1 <= card_id <= card_number_max:
        raise ValueError("card numbers run 1..2**36-1 (0 is the platform's own account)")
    base = chart.new_account(Owner.platform, card_id, Kind.gift_card_liability, currency)
    return replace(
        base,
        owner_ref=f"gift_card:{card_id}",
        flags=int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
    )


def store_credit_account(customer_id: int, merchant_id: int, currency: str) -> NewAccount:
    """The customer's store credit at one merchant (``chart.store_credit_account``'s id)."""
    account_id = chart.store_credit_account(customer_id, merchant_id, currency)  # checks ranges
    account = chart.new_account(
        Owner.customer, (customer_id << 18) | merchant_id, Kind.store_credit, currency
    )
    if account.id != account_id:  # pragma: no cover - the chart changed its packing
        raise ValueError("store credit account ids disagree with the chart")
    return account


def funding_account_id(kind: CardKind, merchant_id: int, currency: str) -> int:
    """Who pays for issued value: the platform's gift card funding, or the merchant."""
    if kind is CardKind.store_credit:
        return chart.payable_account(merchant_id, currency)
    return chart.platform_account(Kind.gift_card_funding, currency)


def issue_transfer(transfer_id: int, card: GiftCard) -> Transfer:
    return Transfer(
        transfer_id,
        funding_account_id(card.kind, card.merchant_id, card.currency),
        card_account_id(card.id, card.currency),
        card.value_micros,
        card.currency,
        code=Code.gift_card_issue,
        reference=f"gift_card:{card.id}:issue",
    )


def redeem_destination(card: GiftCard, customer_id: int) -> int:
    """Where a customer's redemption goes: the wallet, or store credit at the issuer."""
    if card.kind is CardKind.store_credit:
        return chart.store_credit_account(customer_id, card.merchant_id, card.currency)
    return chart.wallet_account(customer_id, card.currency)


def spend_transfer(
    transfer_id: int, card: GiftCard, credit_account_id: int, amount_micros: int, code: Code
) -> Transfer:
    """Value leaves the card: into a wallet, store credit, or a merchant at a till."""
    return Transfer(
        transfer_id,
        card_account_id(card.id, card.currency),
        credit_account_id,
        amount_micros,
        card.currency,
        code=code,
        reference=f"gift_card:{card.id}:{code.name}",
    )


def breakage_transfer(transfer_id: int, card: GiftCard, remaining_micros: int) -> Transfer:
    """An expired card's rest: platform breakage income, or back to the issuing merchant."""
    credit = (
        chart.payable_account(card.merchant_id, card.currency)
        if card.kind is CardKind.store_credit
        else chart.platform_account(Kind.breakage_income, card.currency)
    )
    return spend_transfer(transfer_id, card, credit, remaining_micros, Code.gift_card_breakage)


def store_credit_purchase_transfer(
    transfer_id: int,
    customer_id: int,
    merchant_id: int,
    price_micros: int,
    currency: str,
    reference: str,
) -> Transfer:
    """A purchase paid from the customer's store credit at its issuing merchant.

    For the purchase flow (see the proposed ``FundingSource.store_credit``): the
    account pair makes a foreign merchant impossible by construction.
    """
    return Transfer(
        transfer_id,
        chart.store_credit_account(customer_id, merchant_id, currency),
        chart.payable_account(merchant_id, currency),
        price_micros,
        currency,
        code=plans.Code.purchase,
        reference=reference,
    )


def redeem_refusal(
    card: GiftCard,
    *,
    now_us: int,
    remaining_micros: int,
    currency: str,
    merchant_id: int | None,
    amount_micros: int,
) -> RedeemStatus | None:
    """Card-state checks of a redemption, in precedence order. ``merchant_id`` set: a till.

    ``amount_micros`` 0 means "everything left" (a redemption into an account).
    """
    if card.expired or (card.expires_at_us and now_us >= card.expires_at_us):
        return RedeemStatus.card_expired
    if remaining_micros <= 0:
        return RedeemStatus.card_spent
    if currency != card.currency:
        return RedeemStatus.currency_mismatch
    if (
        merchant_id is not None
        and card.kind is CardKind.store_credit
        and merchant_id != card.merchant_id
    ):
        return RedeemStatus.wrong_merchant
    if amount_micros > remaining_micros:
        return RedeemStatus.amount_above_remaining
    return None
