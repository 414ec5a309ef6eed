"""ISO 4217 currencies and their minor-unit exponents.

The exponent is the number of decimals of the currency's minor unit as ISO 4217
lists it (USD 2, JPY 0, KWD 3, CLF 4). Processors may differ for a few
currencies; a processor adapter passes its own exponent to
:func:`micropay.core.money.to_minor_units` where it does.

This is static reference data, kept here so the core needs no I/O to use it.
A test cross-checks it against Babel's CLDR data.
"""

from __future__ import annotations

from typing import Final

_ZERO_DECIMALS: Final = [
    "BIF",
    "CLP",
    "DJF",
    "GNF",
    "ISK",
    "JPY",
    "KMF",
    "KRW",
    "PYG",
    "RWF",
    "UGX",
    "UYI",
    "VND",
    "VUV",
    "XAF",
    "XOF",
    "XPF",
]
_THREE_DECIMALS: Final = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"]
_FOUR_DECIMALS: Final = ["CLF", "UYW"]
_TWO_DECIMALS: Final = [
    "AED",
    "AFN",
    "ALL",
    "AMD",
    "ANG",
    "AOA",
    "ARS",
    "AUD",
    "AWG",
    "AZN",
    "BAM",
    "BBD",
    "BDT",
    "BGN",
    "BMD",
    "BND",
    "BOB",
    "BOV",
    "BRL",
    "BSD",
    "BTN",
    "BWP",
    "BYN",
    "BZD",
    "CAD",
    "CDF",
    "CHE",
    "CHF",
    "CHW",
    "CNY",
    "COP",
    "COU",
    "CRC",
    "CUP",
    "CVE",
    "CZK",
    "DKK",
    "DOP",
    "DZD",
    "EGP",
    "ERN",
    "ETB",
    "EUR",
    "FJD",
    "FKP",
    "GBP",
    "GEL",
    "GHS",
    "GIP",
    "GMD",
    "GTQ",
    "GYD",
    "HKD",
    "HNL",
    "HTG",
    "HUF",
    "IDR",
    "ILS",
    "INR",
    "IRR",
    "JMD",
    "KES",
    "KGS",
    "KHR",
    "KPW",
    "KYD",
    "KZT",
    "LAK",
    "LBP",
    "LKR",
    "LRD",
    "LSL",
    "MAD",
    "MDL",
    "MGA",
    "MKD",
    "MMK",
    "MNT",
    "MOP",
    "MRU",
    "MUR",
    "MVR",
    "MWK",
    "MXN",
    "MXV",
    "MYR",
    "MZN",
    "NAD",
    "NGN",
    "NIO",
    "NOK",
    "NPR",
    "NZD",
    "PAB",
    "PEN",
    "PGK",
    "PHP",
    "PKR",
    "PLN",
    "QAR",
    "RON",
    "RSD",
    "RUB",
    "SAR",
    "SBD",
    "SCR",
    "SDG",
    "SEK",
    "SGD",
    "SHP",
    "SLE",
    "SOS",
    "SRD",
    "SSP",
    "STN",
    "SVC",
    "SYP",
    "SZL",
    "THB",
    "TJS",
    "TMT",
    "TOP",
    "TRY",
    "TTD",
    "TWD",
    "TZS",
    "UAH",
    "USD",
    "USN",
    "UYU",
    "UZS",
    "VES",
    "VED",
    "WST",
    "XCD",
    "XCG",
    "YER",
    "ZAR",
    "ZMW",
    "ZWG",
]

CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    **dict.fromkeys(_ZERO_DECIMALS, 0),
    **dict.fromkeys(_TWO_DECIMALS, 2),
    **dict.fromkeys(_THREE_DECIMALS, 3),
    **dict.fromkeys(_FOUR_DECIMALS, 4),
}


def is_currency(code: object) -> bool:
    """True when ``code`` is an active ISO 4217 code with a minor unit."""
    return isinstance(code, str) and code in CURRENCY_EXPONENTS


def currency_exponent(code: str) -> int:
    """The ISO 4217 minor-unit exponent of ``code``.

    Raises ``ValueError`` for an unknown code (a programmer error at this depth:
    edges validate currencies before they reach here).
    """
    try:
        return CURRENCY_EXPONENTS[code]
    except KeyError:
        raise ValueError(f"unknown currency {code!r}") from None
