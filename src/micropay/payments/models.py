"""Parties, catalogue and outcomes of the payment models. Pure data and rules."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from micropay.core import limits
from micropay.fees.schedules import FeeSchedule

item_ref_chars_max = 128
name_chars_max = 200
idempotency_key_chars_max = 255
price_micros_max = 10_000 * 1_000_000  # 10,000 units: micropay is for small amounts
topup_micros_min_default = 5_000_000
topup_micros_max_default = 500_000_000
access_period_s_max = 10 * 366 * 86_400


class FundingSource(enum.Enum):
    store_credit = "store_credit"  # merchant-restricted credit, always tried first there
    wallet = "wallet"
    tab = "tab"
    direct = "direct"


class TabState(enum.Enum):
    open = "open"
    frozen = "frozen"  # a settlement charge failed: no tab purchases until paid


class PurchaseStatus(enum.Enum):
    """Outcome of a purchase; every refusal names its reason and writes nothing."""

    ok = "ok"
    already_entitled = "already_entitled"  # owned already: the first receipt, no second charge
    charge_pending = "charge_pending"  # the processor did not answer; completes on retry
    merchant_not_found = "merchant_not_found"
    customer_not_found = "customer_not_found"
    item_not_found = "item_not_found"
    currency_not_sold = "currency_not_sold"
    price_invalid = "price_invalid"
    idempotency_key_invalid = "idempotency_key_invalid"
    idempotency_key_reused = "idempotency_key_reused"  # same key, different request
    tab_frozen = "tab_frozen"
    insufficient_funds = "insufficient_funds"  # no source in the funding policy could pay
    fee_guard_refused = "fee_guard_refused"
    no_payment_method = "no_payment_method"
    charge_declined = "charge_declined"


class TopUpStatus(enum.Enum):
    ok = "ok"
    charge_pending = "charge_pending"
    customer_not_found = "customer_not_found"
    amount_below_minimum = "amount_below_minimum"
    amount_above_maximum = "amount_above_maximum"
    amount_invalid = "amount_invalid"
    currency_invalid = "currency_invalid"
    not_whole_minor_units = "not_whole_minor_units"
    no_payment_method = "no_payment_method"
    charge_declined = "charge_declined"
    idempotency_key_invalid = "idempotency_key_invalid"
    idempotency_key_reused = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class TabPolicy:
    """The trust ladder and billing rules of post-pay tabs.

    A new customer's tab starts at ``first_limit_micros``; each settlement paid
    without dunning raises it by ``step_micros`` up to ``cap_micros``. A tab
    settles in one charge when a purchase would pass its limit, and at period
    end when it owes at least the processor's minimum charge; otherwise it
    carries over until ``carry_max_age_s``.
    """

    first_limit_micros: int = 1_000_000
    step_micros: int = 1_000_000
    cap_micros: int = 5_000_000
    period_s: int = 30 * 86_400
    period_minimum_micros: int = 500_000  # below this a period-end tab carries over
    carry_max_age_s: int = 90 * 86_400
    dunning_backoff_s: tuple[int, ...] = (3_600, 6 * 3_600, 86_400, 3 * 86_400, 7 * 86_400)

    def raised_limit(self, current_micros: int) -> int:
        return min(self.cap_micros, current_micros + self.step_micros)


@dataclass(frozen=True, slots=True)
class Merchant:
    id: int
    public_id: str
    name: str
    currency: str
    funding_policy: tuple[FundingSource, ...]
    fee_guard_max_bps: int  # refuse/warn a direct charge whose fee share is above this
    fee_guard_refuses: bool  # False: warn and charge anyway


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    public_id: str
    currency: str
    processor_customer_token: str
    payment_method_token: str
    tab_limit_micros: int
    tab_state: TabState
    tab_opened_at_us: int  # start of the current billing period
    auto_reload_threshold_micros: int  # 0: no auto-reload
    auto_reload_amount_micros: int


@dataclass(frozen=True, slots=True)
class Item:
    merchant_id: int
    item_ref: str
    name: str
    price_micros: int
    currency: str
    access_period_s: int  # 0: forever
    # A price per use (an API call, a download): each purchase is a new sale and
    # grants nothing that a later purchase would find, so buying again charges again.
    consumable: bool = False


@dataclass(frozen=True, slots=True)
class FeeGuardDecision:
    allowed: bool
    fee_micros: int
    fee_share_bps: int
    warning: str = ""


def fee_guard(
    price_micros: int, schedule: FeeSchedule, max_bps: int, refuses: bool
) -> FeeGuardDecision:
    """Show the fee share of a direct charge; refuse or warn above the merchant's limit.

    The message names the cheaper models, so a customer can choose one.
    """
    if not schedule.can_charge(price_micros):
        return FeeGuardDecision(
            False,
            0,
            limits_bps_max,
            "below the processor's minimum charge; use a prepaid wallet or a tab",
        )
    fee = schedule.fee_micros(price_micros)
    share_bps = -(-fee * 10_000 // price_micros)  # rounded up: never understate a fee
    if share_bps <= max_bps:
        return FeeGuardDecision(True, fee, share_bps)
    warning = (
        f"a direct charge costs {share_bps / 100:.1f}% in fees (limit {max_bps / 100:.1f}%);"
        " a prepaid wallet or a post-pay tab spreads one charge over many purchases"
    )
    return FeeGuardDecision(not refuses, fee, share_bps, warning)


limits_bps_max = 1_000_000


def is_valid_key(key: object) -> bool:
    return (
        isinstance(key, str)
        and 0 < len(key) <= idempotency_key_chars_max
        and key.isprintable()
        and key.isascii()
    )


def is_valid_price(price_micros: object) -> bool:
    return type(price_micros) is int and 0 < price_micros <= min(
        price_micros_max, limits.amount_micros_max
    )
