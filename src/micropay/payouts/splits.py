"""Exact allocation of an amount among parts: platform fee and revenue splits. Pure.

Largest remainder (Hamilton): each part gets the floor of its exact share,
then the leftover micro-units go one each to the parts with the largest
fractional remainders, ties broken by position (earlier first), so the same
input always gives the same parts. The postcondition that the parts sum to the
whole is checked on every call, never by ``assert`` (which ``-O`` drops).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

bps_whole = 10_000
split_parts_max = 50
fee_fixed_micros_max = 1_000_000_000


class AllocationError(RuntimeError):
    """An allocation broke its postcondition: a bug, never a business outcome."""


def allocate(whole_micros: int, weights: Sequence[int]) -> list[int]:
    """Split ``whole_micros`` (>= 0) in proportion to ``weights`` (>= 0, some > 0)."""
    if type(whole_micros) is not int or whole_micros < 0:
        raise ValueError("the whole must be an int >= 0")
    if not weights or any(type(w) is not int or w < 0 for w in weights):
        raise ValueError("weights must be ints >= 0")
    total = sum(weights)
    if total <= 0:
        raise ValueError("at least one weight must be positive")
    floors = [whole_micros * w // total for w in weights]
    remainders = [whole_micros * w % total for w in weights]
    leftover = whole_micros - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    parts = list(floors)
    for i in order[:leftover]:
        parts[i] += 1
    _check(whole_micros, parts, weights)
    return parts


def _check(whole_micros: int, parts: Sequence[int], weights: Sequence[int]) -> None:
    if sum(parts) != whole_micros:
        raise AllocationError(f"parts {list(parts)} do not sum to {whole_micros}")
    if any(p < 0 or (w == 0 and p != 0) for p, w in zip(parts, weights, strict=True)):
        raise AllocationError(f"parts {list(parts)} do not follow weights {list(weights)}")


@dataclass(frozen=True, slots=True)
class PlatformFee:
    """The platform's cut of each sale: ``fee_bps`` of the price plus ``fixed_micros``.

    The fee never exceeds the sale: a small sale pays at most its whole price.
    The percentage is rounded down (the seller keeps the sub-micro remainder).
    """

    fee_bps: int = 0
    fixed_micros: int = 0

    def __post_init__(self) -> None:
        if type(self.fee_bps) is not int or not 0 <= self.fee_bps <= bps_whole:
            raise ValueError("fee_bps must be an int in 0..10,000")
        if type(self.fixed_micros) is not int or not 0 <= self.fixed_micros <= fee_fixed_micros_max:
            raise ValueError("fixed fee must be an int of micros in 0..1,000 units")

    def fee_micros(self, gross_micros: int) -> int:
        if type(gross_micros) is not int or gross_micros < 0:
            raise ValueError("gross must be an int >= 0")
        return min(gross_micros, gross_micros * self.fee_bps // bps_whole + self.fixed_micros)


@dataclass(frozen=True, slots=True)
class Share:
    payee_id: int
    share_bps: int


def check_shares(shares: Sequence[Share]) -> str:
    """Empty when ``shares`` is a valid split list, else the reason it is not."""
    if not 0 < len(shares) <= split_parts_max:
        return f"a split needs 1..{split_parts_max} payees"
    if len({s.payee_id for s in shares}) != len(shares):
        return "each payee may appear once in a split"
    if any(type(s.share_bps) is not int or s.share_bps <= 0 for s in shares):
        return "each share must be a positive int of basis points"
    if sum(s.share_bps for s in shares) != bps_whole:
        return "shares must sum to 10,000 basis points"
    return ""


@dataclass(frozen=True, slots=True)
class SaleSplit:
    gross_micros: int
    fee_micros: int
    payee_parts: tuple[tuple[int, int], ...]  # (payee_id, amount_micros), in split order


def split_sale(gross_micros: int, fee: PlatformFee, shares: Sequence[Share]) -> SaleSplit:
    """The platform fee first, then the rest among payees by their shares, exactly."""
    reason = check_shares(shares)
    if reason:
        raise ValueError(reason)
    fee_micros = fee.fee_micros(gross_micros)
    parts = allocate(gross_micros - fee_micros, [s.share_bps for s in shares])
    result = SaleSplit(
        gross_micros,
        fee_micros,
        tuple((s.payee_id, p) for s, p in zip(shares, parts, strict=True)),
    )
    if result.fee_micros + sum(p for _, p in result.payee_parts) != gross_micros:
        raise AllocationError("fee and payee parts do not sum to the sale")
    return result


def reverse_parts(refund_micros: int, remaining: Sequence[int]) -> list[int]:
    """How much of a refund comes back from each part, given what each part still holds.

    Allocated in proportion to what remains (not to the original parts), so a
    series of partial refunds never takes more from a part than it was given,
    and refunding everything that remains takes back exactly each remainder.
    """
    total = sum(remaining)
    if type(refund_micros) is not int or not 0 <= refund_micros <= total:
        raise ValueError("a refund must be an int between 0 and what remains")
    if refund_micros == 0:
        return [0] * len(remaining)
    parts = allocate(refund_micros, list(remaining))
    if any(p > r for p, r in zip(parts, remaining, strict=True)):
        raise AllocationError(f"reversal {parts} exceeds what remains {list(remaining)}")
    return parts
