"""Tips, metered usage and subscriptions: limits, exact usage sums, billing periods. Pure.

Billing periods are computed from an *anchor* (the local calendar date the
subscription started, at local midnight in its time zone) and a period number
``n``, never from the previous boundary. So a monthly subscription anchored on
Jan 31 starts periods on Feb 28 (or 29), Mar 31, Apr 30, May 31: the anchor
day is kept, a short month only clamps it. Period ``n`` is the half-open
interval ``[boundary(n), boundary(n + 1))`` in UTC microseconds; consecutive
periods share their boundary, so they tile time with no gap and no overlap,
across daylight-saving shifts too (a local day may last 23 or 25 hours).
"""

from __future__ import annotations

import calendar
import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from micropay.core import limits
from micropay.payments.plans import Code

# --- limits ---------------------------------------------------------------

tip_micros_min_default = 10_000  # 0.01 of the currency unit
tip_micros_max_default = 100_000_000  # 100 units
tip_micros_max_ceiling = 10_000 * 1_000_000  # a merchant may not raise the maximum past this
tip_note_chars_max = 280

meter_ref_chars_max = 64
meter_unit_price_micros_min = 1  # a unit price is a whole number of micros
meter_unit_price_micros_max = 1_000_000  # 1 unit of currency per usage unit
usage_quantity_min = 1
usage_quantity_max = 1_000_000
usage_events_per_call_max = 1_000
usage_events_per_posting_max = 100_000
usage_groups_per_run_max = 1_000

plan_ref_chars_max = 128
time_zone_chars_max = 64
subscriptions_per_renewal_run_max = 1_000
period_number_max = 100_000  # ~270 years of days: keeps boundaries inside datetime's range

# The largest possible posting: every event at the largest quantity and unit price.
_posting_micros_bound = (
    usage_events_per_posting_max * usage_quantity_max * meter_unit_price_micros_max
)
if _posting_micros_bound > limits.amount_micros_max:  # always on, unlike assert
    raise ArithmeticError("usage limits allow a posting beyond the signed 64-bit range")


# Billing's transfer codes live with all others in ``payments.plans.Code``.
BillingCode = Code


# --- tips -----------------------------------------------------------------


class TipStatus(enum.Enum):
    """Outcome of a tip; every refusal names its reason and writes nothing."""

    ok = "ok"
    merchant_not_found = "merchant_not_found"
    customer_not_found = "customer_not_found"
    item_not_found = "item_not_found"  # the tip names an item the merchant does not sell
    currency_not_sold = "currency_not_sold"
    amount_invalid = "amount_invalid"  # not an int of micros, or not positive
    amount_below_minimum = "amount_below_minimum"
    amount_above_maximum = "amount_above_maximum"
    note_invalid = "note_invalid"
    idempotency_key_invalid = "idempotency_key_invalid"
    idempotency_key_reused = "idempotency_key_reused"
    no_prepaid_source = "no_prepaid_source"  # the merchant accepts neither wallet nor tab
    tab_frozen = "tab_frozen"
    insufficient_funds = "insufficient_funds"


@dataclass(frozen=True, slots=True)
class TipLimits:
    tip_micros_min: int = tip_micros_min_default
    tip_micros_max: int = tip_micros_max_default


def tip_limits_valid(tip_limits: TipLimits) -> bool:
    low, high = tip_limits.tip_micros_min, tip_limits.tip_micros_max
    return type(low) is int and type(high) is int and 1 <= low <= high <= tip_micros_max_ceiling


def tip_refusal(amount_micros: object, tip_limits: TipLimits) -> TipStatus | None:
    """Why a tip amount is refused, or None when it is within the limits."""
    if type(amount_micros) is not int or amount_micros <= 0:
        return TipStatus.amount_invalid
    if amount_micros < tip_limits.tip_micros_min:
        return TipStatus.amount_below_minimum
    if amount_micros > tip_limits.tip_micros_max:
        return TipStatus.amount_above_maximum
    return None


def note_valid(note: object) -> bool:
    return (
        isinstance(note, str)
        and len(note) <= tip_note_chars_max
        and "\x00" not in note
        and (note == "" or note.isprintable())
    )


# --- metered usage ----------------------------------------------------------


class UsageStatus(enum.Enum):
    ok = "ok"
    merchant_not_found = "merchant_not_found"
    customer_not_found = "customer_not_found"
    meter_not_found = "meter_not_found"
    currency_not_sold = "currency_not_sold"
    quantity_invalid = "quantity_invalid"
    idempotency_key_invalid = "idempotency_key_invalid"
    idempotency_key_reused = "idempotency_key_reused"
    batch_too_large = "batch_too_large"


def is_valid_ref(ref: object, chars_max: int) -> bool:
    return (
        isinstance(ref, str) and 0 < len(ref) <= chars_max and ref.isprintable() and ref.isascii()
    )


def is_valid_quantity(quantity: object) -> bool:
    return type(quantity) is int and usage_quantity_min <= quantity <= usage_quantity_max


def is_valid_unit_price(price_micros: object) -> bool:
    return (
        type(price_micros) is int
        and meter_unit_price_micros_min <= price_micros <= meter_unit_price_micros_max
    )


def usage_amount_micros(lines: list[tuple[int, int]]) -> int:
    """Exact total of ``(quantity, unit_price_micros)`` lines: integer products, no rounding.

    12,345 calls at 400 micros (0.0004) are exactly 4,938,000 micros (4.938).
    """
    total = 0
    for quantity, unit_price in lines:
        if not is_valid_quantity(quantity) or not is_valid_unit_price(unit_price):
            raise ValueError("usage line outside the quantity or unit price limits")
        total += quantity * unit_price
    if total > limits.amount_micros_max:
        raise ArithmeticError("usage total beyond the signed 64-bit range")
    return total


# --- subscriptions ------------------------------------------------------------


class Period(enum.Enum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"
    yearly = "yearly"


class SubscriptionState(enum.Enum):
    active = "active"  # the current period is paid
    past_due = "past_due"  # a renewal failed: no entitlement for the new period
    cancelled = "cancelled"  # ended: no more renewals


class SubscriptionStatus(enum.Enum):
    ok = "ok"
    merchant_not_found = "merchant_not_found"
    customer_not_found = "customer_not_found"
    plan_not_found = "plan_not_found"
    subscription_not_found = "subscription_not_found"
    currency_not_sold = "currency_not_sold"
    time_zone_invalid = "time_zone_invalid"
    idempotency_key_invalid = "idempotency_key_invalid"
    idempotency_key_reused = "idempotency_key_reused"
    already_cancelled = "already_cancelled"
    no_prepaid_source = "no_prepaid_source"
    tab_frozen = "tab_frozen"
    insufficient_funds = "insufficient_funds"


def zone(name: object) -> ZoneInfo | None:
    """The IANA time zone ``name``, or None when it is not one."""
    if not isinstance(name, str) or not 0 < len(name) <= time_zone_chars_max:
        return None
    if not name.isascii() or not name.isprintable() or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def add_months(anchor: date, months: int) -> date:
    """``anchor`` moved by ``months`` calendar months, its day clamped to the month's length."""
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month0 = divmod(index, 12)
    day = min(anchor.day, calendar.monthrange(year, month0 + 1)[1])
    return date(year, month0 + 1, day)


def period_start_date(anchor: date, period: Period, n: int) -> date:
    """The local calendar date on which period ``n`` (0 = the first) starts."""
    if type(n) is not int or not 0 <= n <= period_number_max:
        raise ValueError("period number out of range")
    if period is Period.daily:
        return anchor + timedelta(days=n)
    if period is Period.weekly:
        return anchor + timedelta(days=7 * n)
    if period is Period.monthly:
        return add_months(anchor, n)
    return add_months(anchor, 12 * n)


def local_midnight_us(day: date, tz: ZoneInfo) -> int:
    """The UTC instant (micros) of local midnight starting ``day`` in ``tz``.

    Where midnight does not exist (a DST gap at midnight) the day starts when
    the clock jumps past it; where it happens twice, at the first one.
    """
    local = datetime(day.year, day.month, day.day, tzinfo=tz, fold=0)
    # fold=0 in a gap maps with the pre-transition offset: the instant of the jump.
    return _to_us(local.astimezone(UTC))


def boundary_us(anchor: date, period: Period, n: int, tz: ZoneInfo) -> int:
    """Start of period ``n`` (end of period ``n - 1``) in UTC micros."""
    return local_midnight_us(period_start_date(anchor, period, n), tz)


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    number: int
    starts_at_us: int
    ends_at_us: int


def billing_period(anchor: date, period: Period, n: int, tz: ZoneInfo) -> BillingPeriod:
    starts = boundary_us(anchor, period, n, tz)
    ends = boundary_us(anchor, period, n + 1, tz)
    if ends <= starts:
        raise ArithmeticError("billing period has no length")
    return BillingPeriod(n, starts, ends)


def period_number_at(anchor: date, period: Period, tz: ZoneInfo, at_us: int) -> int:
    """The number of the period containing ``at_us`` (0 before the anchor)."""
    if at_us < boundary_us(anchor, period, 0, tz):
        return 0
    low, high = 0, 1
    while boundary_us(anchor, period, high, tz) <= at_us:
        low, high = high, min(high * 2, period_number_max)
        if low == period_number_max:
            return low
    # boundary(low) <= at < boundary(high)
    while high - low > 1:
        middle = (low + high) // 2
        if boundary_us(anchor, period, middle, tz) <= at_us:
            low = middle
        else:
            high = middle
    return low


def local_date(at_us: int, tz: ZoneInfo) -> date:
    """The local calendar date of the instant ``at_us`` in ``tz``."""
    return datetime.fromtimestamp(at_us // 1_000_000, tz).date()


def _to_us(instant: datetime) -> int:
    delta = instant - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --- rows ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TipRecord:
    id: int
    merchant_id: int
    customer_id: int
    amount_micros: int
    currency: str
    funding: str  # "wallet" | "tab"
    transfer_id: int
    note: str
    idempotency_key: str
    request_hash: str
    created_at_us: int


@dataclass(frozen=True, slots=True)
class Meter:
    merchant_id: int
    meter: str
    unit_price_micros: int
    currency: str


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What a usage event asked for (to tell a retry from a different request)."""

    customer_id: int
    meter: str
    quantity: int


@dataclass(frozen=True, slots=True)
class UsageClaim:
    """Events marked with one posting id: how many, their quantity and exact amount."""

    events: int
    quantity: int
    amount_micros: int


@dataclass(frozen=True, slots=True)
class UsagePosting:
    id: int
    merchant_id: int
    customer_id: int
    meter: str
    window_end_us: int
    events: int
    quantity: int
    amount_micros: int
    currency: str
    funding: str
    transfer_id: int
    created_at_us: int


@dataclass(frozen=True, slots=True)
class Plan:
    merchant_id: int
    plan_ref: str
    name: str
    period: Period
    price_micros: int
    currency: str


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    id: int
    merchant_id: int
    customer_id: int
    plan_ref: str
    period: Period
    price_micros: int
    currency: str
    time_zone: str
    anchor_date: date
    period_number: int  # the last paid period
    period_starts_at_us: int
    period_ends_at_us: int
    state: SubscriptionState
    cancel_at_period_end: bool
    idempotency_key: str
    request_hash: str
    created_at_us: int
    updated_at_us: int


@dataclass(frozen=True, slots=True)
class PaidPeriod:
    id: int
    subscription_id: int
    period_number: int
    starts_at_us: int
    ends_at_us: int
    purchase_id: int
    transfer_id: int
    created_at_us: int
