"""Processor fee schedules as data: percentage + fixed, minimum charge, per currency.

A fee is computed on the amount actually charged in the processor's minor unit
(cents), as processors do: ``round_half_up(amount * bps / 10_000) + fixed``.
Amounts in and out are micros; the fee is always a whole number of minor
units.

Reference schedules (``shared/BENCHMARKS.md``): card standard 2.9% + 0.30 USD
with a 0.50 USD minimum charge; card micropayment 5% + 0.05 USD. They cross near
12 USD: below it the micropayment rate is cheaper. A dispute costs 15 USD.
"""

from __future__ import annotations

from dataclasses import dataclass

from micropay.core.currencies import currency_exponent
from micropay.core.money import MICROS_EXPONENT, check_micros

BPS_PER_UNIT = 10_000
fee_bps_max = 10_000


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    name: str
    currency: str
    fee_bps: int  # 290 = 2.90 %
    fixed_micros: int
    minimum_charge_micros: int = 0
    dispute_fee_micros: int = 0

    def __post_init__(self) -> None:
        currency_exponent(self.currency)
        if not 0 <= self.fee_bps <= fee_bps_max:
            raise ValueError("fee_bps must be between 0 and 10,000")
        for value in (self.fixed_micros, self.minimum_charge_micros, self.dispute_fee_micros):
            if check_micros(value) < 0:
                raise ValueError("fee amounts must not be negative")

    def fee_micros(self, charge_micros: int) -> int:
        """The processor's fee for one charge of ``charge_micros`` (a whole minor-unit amount)."""
        check_micros(charge_micros)
        if charge_micros <= 0:
            raise ValueError("a charge must be positive")
        step: int = 10 ** (MICROS_EXPONENT - currency_exponent(self.currency))
        minor = charge_micros // step
        variable_minor = (minor * self.fee_bps * 2 + BPS_PER_UNIT) // (2 * BPS_PER_UNIT)
        return variable_minor * step + self.fixed_micros

    def can_charge(self, charge_micros: int) -> bool:
        return charge_micros >= max(self.minimum_charge_micros, 1)


CARD_STANDARD_USD = FeeSchedule(
    "card_standard",
    "USD",
    fee_bps=290,
    fixed_micros=300_000,
    minimum_charge_micros=500_000,
    dispute_fee_micros=15_000_000,
)
CARD_MICRO_USD = FeeSchedule(
    "card_micropayment",
    "USD",
    fee_bps=500,
    fixed_micros=50_000,
    dispute_fee_micros=15_000_000,
)
SCHEDULES = {s.name: s for s in (CARD_STANDARD_USD, CARD_MICRO_USD)}


def cheapest(schedules: list[FeeSchedule], charge_micros: int) -> FeeSchedule:
    """The schedule with the lowest fee for this charge among those that can take it."""
    usable = [s for s in schedules if s.can_charge(charge_micros)]
    if not usable:
        raise ValueError("no fee schedule accepts a charge this small")
    return min(usable, key=lambda s: (s.fee_micros(charge_micros), s.name))
