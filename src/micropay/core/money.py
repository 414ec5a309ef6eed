"""Exact amounts: ``int`` micro-units (10^-6 of the currency unit).

An amount is a plain ``int`` count of micros, so 0.0004 USD is exactly ``400``.
Floats are refused everywhere (``TypeError``): binary floating point cannot
hold 0.1 exactly. ``Decimal`` and strings are accepted only here, at the edges.

Rounding happens only when money crosses a processor, whose minor unit is
coarser (cents, yen, fils). :func:`to_minor_units` never drops the difference:
it returns it as a remainder that the caller carries (on the tab, in a rounding
account), so ``from_minor_units(minor) + remainder == micros`` always holds.
"""

from __future__ import annotations

import enum
from decimal import Decimal, InvalidOperation

from micropay.core.currencies import currency_exponent
from micropay.core.limits import amount_micros_max

MICROS_EXPONENT = 6
MICROS_PER_UNIT = 10**MICROS_EXPONENT


class Rounding(enum.Enum):
    """How to round micros to a processor's minor unit.

    - ``DOWN``: toward zero; the remainder has the sign of the amount. Used when
      charging a tab: charge what is whole, carry the sub-cent rest.
    - ``UP``: away from zero; the remainder has the opposite sign.
    - ``HALF_EVEN``: to nearest, ties to even (banker's rounding).
    """

    DOWN = "down"
    UP = "up"
    HALF_EVEN = "half_even"


def check_micros(value: object, *, name: str = "amount_micros") -> int:
    """Return ``value`` if it is an ``int`` within the signed 64-bit range.

    Raises ``TypeError`` for floats, bools, Decimals and anything not an int, and
    ``ValueError`` beyond +/- the signed 64-bit maximum.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int count of micros, not {type(value).__name__}")
    if not -amount_micros_max <= value <= amount_micros_max:
        raise ValueError(f"{name} is beyond the signed 64-bit range")
    return value


def parse_amount(text: str | Decimal, currency: str) -> int:
    """Parse a decimal amount in currency units ("0.0004", "12.5") into micros.

    Raises ``TypeError`` for floats and other non-string, non-Decimal input;
    ``ValueError`` for malformed text, NaN/infinity, more than six decimals,
    or a value beyond the signed 64-bit range of micros. The currency is
    validated (unknown codes raise ``ValueError``).
    """
    currency_exponent(currency)
    if isinstance(text, bool) or not isinstance(text, (str, Decimal)):
        raise TypeError(f"amount must be a decimal string, not {type(text).__name__}")
    if isinstance(text, str):
        stripped = text.strip()
        if not stripped or len(stripped) > 40:
            raise ValueError("amount must be a decimal string of at most 40 characters")
        try:
            value = Decimal(stripped)
        except InvalidOperation:
            raise ValueError(f"amount {stripped!r} is not a decimal number") from None
    else:
        value = text
    if not value.is_finite():
        raise ValueError("amount must be a finite number")
    return check_micros(_decimal_to_micros(value))


def _decimal_to_micros(value: Decimal) -> int:
    """Exact integer arithmetic on the digits: no decimal context, no rounding, no overflow."""
    sign, digits, exponent = value.as_tuple()
    coefficient: int = int("".join(map(str, digits)) or "0")
    if coefficient == 0:
        return 0
    shift = int(exponent) + MICROS_EXPONENT
    if shift >= 0:
        if len(digits) + shift > 19:
            raise ValueError("amount is beyond the signed 64-bit range")
        micros: int = coefficient * 10**shift
    else:
        if -shift > len(digits):
            raise ValueError("amount has more than six decimals (finer than a micro-unit)")
        micros, rest = divmod(coefficient, 10**-shift)
        if rest:
            raise ValueError("amount has more than six decimals (finer than a micro-unit)")
    return -micros if sign else micros


def format_amount(micros: int, currency: str) -> str:
    """Format micros as a decimal string in currency units.

    Shows at least the currency's minor-unit decimals and at most six, without
    trailing zeros beyond the minor unit: ``400`` USD -> ``"0.0004"``,
    ``1_500_000`` USD -> ``"1.50"``, ``5_000_000`` JPY -> ``"5"``.
    """
    check_micros(micros)
    exponent = currency_exponent(currency)
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_UNIT)
    digits = f"{frac:06d}".rstrip("0")
    if len(digits) < exponent:
        digits = digits.ljust(exponent, "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def to_minor_units(micros: int, exponent: int, rounding: Rounding) -> tuple[int, int]:
    """Convert micros to a processor's minor units, returning ``(minor, remainder_micros)``.

    ``exponent`` is the processor's decimals for the currency (0..6). The result
    always satisfies ``from_minor_units(minor, exponent) + remainder == micros``:
    nothing is lost, the caller carries the remainder.
    """
    check_micros(micros)
    if isinstance(exponent, bool) or not isinstance(exponent, int):
        raise TypeError("exponent must be an int")
    if not 0 <= exponent <= MICROS_EXPONENT:
        raise ValueError("exponent must be between 0 and 6")
    step = 10 ** (MICROS_EXPONENT - exponent)
    magnitude, rest = divmod(abs(micros), step)
    sign = -1 if micros < 0 else 1
    if rest and rounding is Rounding.UP:
        magnitude += 1
    elif rest and rounding is Rounding.HALF_EVEN:
        twice = 2 * rest
        if twice > step or (twice == step and magnitude % 2 == 1):
            magnitude += 1
    minor = sign * magnitude
    check_micros(minor * step, name="rounded amount")
    remainder = micros - minor * step
    _check_split(micros, minor * step, remainder)
    return minor, remainder


def from_minor_units(minor: int, exponent: int) -> int:
    """Convert a processor's minor units (cents, yen) to micros, exactly."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError("minor units must be an int")
    if not 0 <= exponent <= MICROS_EXPONENT:
        raise ValueError("exponent must be between 0 and 6")
    return check_micros(minor * 10 ** (MICROS_EXPONENT - exponent))


def _check_split(whole: int, part: int, remainder: int) -> None:
    # Always on, unlike ``assert`` (dropped under ``python -O``).
    if part + remainder != whole:
        raise ArithmeticError("rounding lost money: parts do not sum to the whole")
