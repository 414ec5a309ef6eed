"""Money at the edges: parsing, formatting and rounding to processor minor units.

Amounts are ``int`` micros. Floats are refused with ``TypeError`` everywhere;
malformed, non-finite, too fine or too large amounts with ``ValueError``.
Rounding to a processor's minor unit never loses money: the remainder comes
back to the caller, so ``from_minor_units(minor) + remainder == micros``.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from micropay.core.limits import amount_micros_max
from micropay.core.money import (
    Rounding,
    check_micros,
    format_amount,
    from_minor_units,
    parse_amount,
    to_minor_units,
)

MAX = amount_micros_max
DOWN, UP, HALF_EVEN = Rounding.DOWN, Rounding.UP, Rounding.HALF_EVEN
int64_micros = st.integers(min_value=-MAX, max_value=MAX)
exponents = st.integers(min_value=0, max_value=6)
# Currencies with 0, 2, 3 and 4 minor-unit decimals.
currencies = st.sampled_from(["JPY", "USD", "KWD", "CLF"])

# --- floats and other wrong types -------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: parse_amount(0.1, "USD"),  # type: ignore[arg-type]
        lambda: parse_amount(1, "USD"),  # type: ignore[arg-type]
        lambda: parse_amount(None, "USD"),  # type: ignore[arg-type]
        lambda: parse_amount(True, "USD"),  # type: ignore[arg-type]
        lambda: check_micros(1.0),
        lambda: check_micros(True),
        lambda: check_micros(Decimal(1)),
        lambda: check_micros("1"),
        lambda: check_micros(None),
        lambda: format_amount(1.0, "USD"),  # type: ignore[arg-type]
        lambda: to_minor_units(1.0, 2, DOWN),  # type: ignore[arg-type]
        lambda: to_minor_units(100, 2.0, DOWN),  # type: ignore[arg-type]
        lambda: to_minor_units(100, True, DOWN),  # type: ignore[arg-type]
        lambda: from_minor_units(1.0, 2),  # type: ignore[arg-type]
        lambda: from_minor_units(False, 2),
    ],
    ids=[
        "parse-float",
        "parse-int",
        "parse-none",
        "parse-bool",
        "check-float",
        "check-bool",
        "check-decimal",
        "check-str",
        "check-none",
        "format-float",
        "to_minor-float",
        "to_minor-float-exponent",
        "to_minor-bool-exponent",
        "from_minor-float",
        "from_minor-bool",
    ],
)
def test_wrong_types_are_type_errors(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError):
        call()


# --- parse --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "micros"),
    [
        ("5.00", "USD", 5_000_000),
        ("0.10", "USD", 100_000),
        ("0.0004", "USD", 400),
        ("0.000001", "USD", 1),
        ("-0.000001", "USD", -1),
        ("  12.5 ", "EUR", 12_500_000),
        ("1.0000000", "USD", 1_000_000),  # extra zeros are exact, not finer
        ("1E+3", "USD", 1_000_000_000),
        ("-0", "USD", 0),
        ("500", "JPY", 500_000_000),
        ("9223372036854.775807", "USD", MAX),
        ("-9223372036854.775807", "USD", -MAX),
        (Decimal("0.25"), "USD", 250_000),
    ],
)
def test_parse_amount_accepts(text: str | Decimal, currency: str, micros: int) -> None:
    assert parse_amount(text, currency) == micros


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "-nan",
        "sNaN",
        "inf",
        "-Infinity",
        Decimal("NaN"),
        Decimal("Infinity"),
        "0.0000001",  # finer than a micro
        "1e-7",
        "9223372036854.775808",  # one micro past the signed 64-bit range
        "-9223372036854.775808",
        "1e30",
        "",
        "   ",
        "abc",
        "1,00",
        "1.2.3",
        "0x10",
        "1" * 41,  # longer than 40 characters
    ],
)
def test_parse_amount_refuses(text: str | Decimal) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_amount(text, "USD")


def test_parse_amount_refuses_unknown_currency() -> None:
    for currency in ["XYZ", "usd", "", "US"]:
        with pytest.raises(ValueError, match="unknown currency"):
            parse_amount("1.00", currency)


@pytest.mark.parametrize(
    "text",
    [
        "1.00000000000000000000000000001",  # 29 decimals: silently parsed as 1_000_000
        "1e-999999999",  # a tiny non-zero amount: silently parsed as 0
        "1e999999999",  # raises decimal.Overflow, not ValueError
    ],
)
def test_parse_amount_refuses_beyond_decimal_context(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_amount(text, "USD")


# --- format -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "currency", "text"),
    [
        (400, "USD", "0.0004"),
        (1_500_000, "USD", "1.50"),
        (5_000_000, "JPY", "5"),
        (5_500_000, "JPY", "5.5"),
        (-400, "USD", "-0.0004"),
        (0, "USD", "0.00"),
        (0, "JPY", "0"),
        (1, "KWD", "0.000001"),
        (1_230_000, "KWD", "1.230"),
        (1_000_000, "CLF", "1.0000"),
        (MAX, "USD", "9223372036854.775807"),
        (-MAX, "USD", "-9223372036854.775807"),
    ],
)
def test_format_amount(micros: int, currency: str, text: str) -> None:
    assert format_amount(micros, currency) == text


def test_format_amount_refuses_out_of_range_and_unknown_currency() -> None:
    with pytest.raises(ValueError, match="64-bit"):
        format_amount(MAX + 1, "USD")
    with pytest.raises(ValueError, match="unknown currency"):
        format_amount(1, "XYZ")


@given(micros=int64_micros, currency=currencies)
def test_format_then_parse_round_trips(micros: int, currency: str) -> None:
    assert parse_amount(format_amount(micros, currency), currency) == micros


@given(
    units=st.integers(min_value=-(10**12), max_value=10**12),
    decimals=st.integers(min_value=0, max_value=999_999),
    currency=currencies,
)
def test_parse_then_format_is_canonical(units: int, decimals: int, currency: str) -> None:
    text = f"{units}.{decimals:06d}"
    micros = parse_amount(text, currency)
    canonical = format_amount(micros, currency)
    assert parse_amount(canonical, currency) == micros
    assert format_amount(parse_amount(canonical, currency), currency) == canonical


# --- check_micros --------------------------------------------------------------


def test_check_micros_at_the_limit_and_one_past() -> None:
    assert check_micros(MAX) == MAX
    assert check_micros(-MAX) == -MAX
    for past in (MAX + 1, -MAX - 1):
        with pytest.raises(ValueError, match="64-bit"):
            check_micros(past)


# --- rounding to minor units ---------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "exponent", "down", "up", "half_even"),
    [
        # USD cents (exponent 2: 10_000 micros per cent)
        (0, 2, 0, 0, 0),
        (10_000, 2, 1, 1, 1),
        (12_345, 2, 1, 2, 1),
        (15_000, 2, 1, 2, 2),  # tie: to the even cent 2
        (25_000, 2, 2, 3, 2),  # tie: to the even cent 2
        (25_001, 2, 2, 3, 3),
        (400, 2, 0, 1, 0),  # 0.0004 USD: under a cent
        (-12_345, 2, -1, -2, -1),
        (-15_000, 2, -1, -2, -2),
        (-25_000, 2, -2, -3, -2),
        # JPY (exponent 0)
        (1_500_000, 0, 1, 2, 2),
        (2_500_000, 0, 2, 3, 2),
        (2_499_999, 0, 2, 3, 2),
        # KWD (exponent 3) and micros themselves (exponent 6)
        (1_234_567, 3, 1_234, 1_235, 1_235),
        (1_234_567, 6, 1_234_567, 1_234_567, 1_234_567),
    ],
)
def test_rounding_table(micros: int, exponent: int, down: int, up: int, half_even: int) -> None:
    step = 10 ** (6 - exponent)
    for rounding, minor in ((DOWN, down), (UP, up), (HALF_EVEN, half_even)):
        got_minor, remainder = to_minor_units(micros, exponent, rounding)
        assert got_minor == minor, rounding
        assert got_minor * step + remainder == micros
        assert abs(remainder) < step


def test_rounding_remainder_signs() -> None:
    """DOWN carries a remainder with the amount's sign; UP the opposite sign."""
    assert to_minor_units(12_345, 2, DOWN) == (1, 2_345)
    assert to_minor_units(12_345, 2, UP) == (2, -7_655)
    assert to_minor_units(-12_345, 2, DOWN) == (-1, -2_345)
    assert to_minor_units(-12_345, 2, UP) == (-2, 7_655)


@pytest.mark.parametrize("exponent", [-1, 7])
def test_exponent_out_of_range(exponent: int) -> None:
    with pytest.raises(ValueError, match="exponent"):
        to_minor_units(1, exponent, DOWN)
    with pytest.raises(ValueError, match="exponent"):
        from_minor_units(1, exponent)


def test_from_minor_units_refuses_past_the_range() -> None:
    assert from_minor_units(MAX, 6) == MAX
    with pytest.raises(ValueError, match="64-bit"):
        from_minor_units(MAX // 100 + 1, 4)


@given(micros=int64_micros, exponent=exponents, rounding=st.sampled_from(list(Rounding)))
@example(micros=MAX - 10**6, exponent=0, rounding=UP)
@example(micros=-(MAX - 10**6), exponent=0, rounding=UP)
def test_minor_units_plus_remainder_is_the_whole(
    micros: int, exponent: int, rounding: Rounding
) -> None:
    """Nothing is lost: the processor's part plus the carried remainder is the amount.

    Rounding away from zero can pass the signed 64-bit range only within one
    minor unit of its edge; that edge is :func:`test_rounding_at_the_int64_edge`.
    """
    step = 10 ** (6 - exponent)
    try:
        minor, remainder = to_minor_units(micros, exponent, rounding)
    except ValueError:
        # Refusing is right only where rounding away from zero passes the range.
        assert rounding is not DOWN
        assert abs(micros) > MAX - step
        return
    if abs(minor) * step > MAX:
        return  # that edge, handed out today: test_rounding_at_the_int64_edge
    assert from_minor_units(minor, exponent) + remainder == micros
    assert abs(remainder) < step
    if rounding is DOWN:
        assert remainder == 0 or (remainder > 0) == (micros > 0)


@given(micros=int64_micros, exponent=exponents)
def test_rounding_down_round_trips_for_every_int64(micros: int, exponent: int) -> None:
    minor, remainder = to_minor_units(micros, exponent, DOWN)
    assert from_minor_units(minor, exponent) + remainder == micros


@pytest.mark.parametrize("rounding", [UP, HALF_EVEN])
def test_rounding_at_the_int64_edge(rounding: Rounding) -> None:
    """MAX micros rounded up to a whole yen is past the range: refuse, do not hand it out."""
    try:
        minor, remainder = to_minor_units(MAX, 0, rounding)
    except ValueError:
        return
    assert from_minor_units(minor, 0) + remainder == MAX
