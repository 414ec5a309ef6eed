"""The chart of accounts: which ledger accounts each payment model posts to.

Every ledger account id is *derived* from (owner, kind, currency), so a plan of
transfers needs no lookup to find its accounts::

    id = owner_type << 57 | owner_id << 21 | kind << 15 | currency_code

``owner_type`` (3 bits): platform, merchant, customer, payee. ``owner_id``
(36 bits): the party's internal number. ``kind`` (6 bits): the account kind
below. ``currency_code`` (15 bits): the three ISO 4217 letters in base 26.
Ids stay below 2**62 (the system-reserved range).

| account | owner | side | flags | posted by |
|---|---|---|---|---|
| processor_clearing | platform | asset (debit) | none | top-ups, tab settlements, direct charges (debit); fees, refunds to card (credit) |
| processor_fees | platform | expense (debit) | none | every processor charge's fee |
| platform_revenue | platform | income (credit) | none | platform fees (payouts issue) |
| gift_card_liability | platform | liability (credit) | none | gift card issue (credit), redemption (debit) |
| gift_card_funding | platform | equity (debit) | none | value issued for gift cards sold or granted |
| breakage_income | platform | income (credit) | none | expired gift card value |
| adjustments | platform | equity (debit) | none | manual adjustments by staff (with who and why) |
| dispute_losses | platform | expense (debit) | none | chargebacks the platform cannot recover, dispute fees |
| customer_wallet | customer | liability (credit) | debits_must_not_exceed_credits | top-ups and redemptions (credit), purchases (debit) |
| customer_tab | customer | receivable as a credit line | debits_must_not_exceed_credits + credit limit | purchases (debit), settlement charges (credit) |
| store_credit | customer x merchant | liability (credit) | debits_must_not_exceed_credits | merchant-restricted credit |
| merchant_payable | merchant | liability (credit) | none | sales (credit), refunds (debit) |
| payee_pending | payee | liability (credit) | none | revenue shares during the holding period |
| payee_available | payee | liability (credit) | none (negative = a debt) | released shares (credit), payouts (debit) |
| payee_deposits | payee | asset (debit) | none | micro-deposits sent and taken back |

A tab's balance is negative while the customer owes; its credit limit is the
tab limit. Money the processor holds for us sits in ``processor_clearing``; a
fee moves from clearing to ``processor_fees`` when the charge settles.
"""

from __future__ import annotations

import enum

from micropay.core.accounts import AccountFlags, NewAccount
from micropay.core.currencies import currency_exponent


class Owner(enum.IntEnum):
    platform = 1
    merchant = 2
    customer = 3
    payee = 4


class Kind(enum.IntEnum):
    processor_clearing = 1
    processor_fees = 2
    platform_revenue = 3
    gift_card_liability = 4
    gift_card_funding = 5
    breakage_income = 6
    adjustments = 7
    dispute_losses = 8
    customer_wallet = 10
    customer_tab = 11
    store_credit = 12
    merchant_payable = 20
    payee_pending = 21
    payee_available = 22
    payee_deposits = 23


owner_id_max = 2**36 - 1
_KIND_BITS = 6
_CURRENCY_BITS = 15
_OWNER_ID_SHIFT = _KIND_BITS + _CURRENCY_BITS
_OWNER_TYPE_SHIFT = _OWNER_ID_SHIFT + 36

_WALLET_FLAGS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_FLAGS = {
    Kind.customer_wallet: _WALLET_FLAGS,
    Kind.customer_tab: _WALLET_FLAGS,
    Kind.store_credit: _WALLET_FLAGS,
}
PLATFORM_KINDS = (
    Kind.processor_clearing,
    Kind.processor_fees,
    Kind.platform_revenue,
    Kind.gift_card_liability,
    Kind.gift_card_funding,
    Kind.breakage_income,
    Kind.adjustments,
    Kind.dispute_losses,
)


def currency_code(currency: str) -> int:
    currency_exponent(currency)  # validates
    a, b, c = (ord(ch) - 65 for ch in currency)
    return (a * 26 + b) * 26 + c


def account_id(owner: Owner, owner_id: int, kind: Kind, currency: str) -> int:
    """The ledger account id of ``owner``'s ``kind`` account in ``currency``."""
    if not 0 <= owner_id <= owner_id_max:
        raise ValueError("owner id out of range")
    return (
        (int(owner) << _OWNER_TYPE_SHIFT)
        | (owner_id << _OWNER_ID_SHIFT)
        | (int(kind) << _CURRENCY_BITS)
        | currency_code(currency)
    )


def platform_account(kind: Kind, currency: str) -> int:
    return account_id(Owner.platform, 0, kind, currency)


def wallet_account(customer_id: int, currency: str) -> int:
    return account_id(Owner.customer, customer_id, Kind.customer_wallet, currency)


def tab_account(customer_id: int, currency: str) -> int:
    return account_id(Owner.customer, customer_id, Kind.customer_tab, currency)


def payable_account(merchant_id: int, currency: str) -> int:
    return account_id(Owner.merchant, merchant_id, Kind.merchant_payable, currency)


def store_credit_account(customer_id: int, merchant_id: int, currency: str) -> int:
    """Merchant-restricted credit: one account per (customer, merchant) pair.

    The owner id packs both 18-bit numbers, so store credit needs ids below 2**18.
    """
    if not (0 <= customer_id < 2**18 and 0 <= merchant_id < 2**18):
        raise ValueError("store credit needs customer and merchant numbers below 2**18")
    return account_id(
        Owner.customer, (customer_id << 18) | merchant_id, Kind.store_credit, currency
    )


def new_account(
    owner: Owner, owner_id: int, kind: Kind, currency: str, *, credit_limit_micros: int = 0
) -> NewAccount:
    return NewAccount(
        id=account_id(owner, owner_id, kind, currency),
        currency=currency,
        kind=kind.name,
        owner_ref=f"{owner.name}:{owner_id}",
        flags=_FLAGS.get(kind, 0),
        credit_limit_micros=credit_limit_micros,
    )


def platform_accounts(currency: str) -> list[NewAccount]:
    return [new_account(Owner.platform, 0, kind, currency) for kind in PLATFORM_KINDS]
