"""Accounts: one currency, flags, a credit limit, and four counters.

An account stores only counters (posted and pending, debits and credits);
balances are derived by the functions below, never stored twice.

Flags (at most one balance flag):

- ``DEBITS_MUST_NOT_EXCEED_CREDITS``: a liability the platform owes, such as a
  customer wallet: ``debits_pending + debits_posted <= credits_posted +
  credit_limit``. With ``credit_limit_micros > 0`` the account may go that far
  below zero: that is a post-pay tab.
- ``CREDITS_MUST_NOT_EXCEED_DEBITS``: the mirror rule for debit-normal accounts,
  ``credits_pending + credits_posted <= debits_posted + credit_limit``.

Pending amounts count against the limit (a hold reserves funds) but are not
counted as available on the other side until posted.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from micropay.core import limits
from micropay.core.currencies import is_currency
from micropay.core.statuses import AccountStatus


class AccountFlags(enum.IntFlag):
    NONE = 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 2


ACCOUNT_FLAGS_KNOWN = int(
    AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
)
_KIND_RE = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class NewAccount:
    """A request to open an account. ``id`` is the client's idempotency key."""

    id: int
    currency: str
    kind: str
    owner_ref: str = ""
    flags: int = 0
    credit_limit_micros: int = 0


@dataclass(frozen=True, slots=True)
class Account:
    """An account as stored, with its counters."""

    id: int
    currency: str
    kind: str
    owner_ref: str
    flags: int
    credit_limit_micros: int
    debits_pending_micros: int
    debits_posted_micros: int
    credits_pending_micros: int
    credits_posted_micros: int
    created_at_us: int

    def same_request(self, request: NewAccount) -> bool:
        return (
            self.currency == request.currency
            and self.kind == request.kind
            and self.owner_ref == request.owner_ref
            and self.flags == request.flags
            and self.credit_limit_micros == request.credit_limit_micros
        )


@dataclass(frozen=True, slots=True)
class AccountResult:
    id: int
    status: AccountStatus
    replayed: bool = False


def credit_balance_micros(account: Account) -> int:
    """Posted credits minus posted debits (what a credit-normal account holds)."""
    return account.credits_posted_micros - account.debits_posted_micros


def debit_balance_micros(account: Account) -> int:
    """Posted debits minus posted credits (what a debit-normal account holds)."""
    return account.debits_posted_micros - account.credits_posted_micros


def available_micros(account: Account) -> int:
    """What a credit-normal account can still spend: balance minus holds, plus its credit line."""
    return (
        account.credits_posted_micros
        - account.debits_posted_micros
        - account.debits_pending_micros
        + (
            account.credit_limit_micros
            if account.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
            else 0
        )
    )


def validate_new_account(request: NewAccount) -> AccountStatus:
    """Request checks for opening an account, in order of precedence."""
    if not _is_int(request.id) or request.id < limits.id_min:
        return AccountStatus.id_must_be_positive
    if request.id > limits.id_max:
        return AccountStatus.id_must_not_exceed_max
    if not _is_int(request.flags) or request.flags & ~ACCOUNT_FLAGS_KNOWN or request.flags < 0:
        return AccountStatus.flags_are_unknown
    if request.flags == ACCOUNT_FLAGS_KNOWN:
        return AccountStatus.flags_are_mutually_exclusive
    if not is_currency(request.currency):
        return AccountStatus.currency_must_be_valid
    if (
        not isinstance(request.kind, str)
        or len(request.kind) > limits.account_kind_chars_max
        or not _KIND_RE.match(request.kind)
    ):
        return AccountStatus.kind_must_be_valid
    if not is_storable_text(request.owner_ref):
        return AccountStatus.text_must_be_valid
    if len(request.owner_ref) > limits.owner_ref_chars_max:
        return AccountStatus.owner_ref_too_long
    if (
        not _is_int(request.credit_limit_micros)
        or not 0 <= request.credit_limit_micros <= limits.amount_micros_max
    ):
        return AccountStatus.credit_limit_must_be_in_range
    if request.credit_limit_micros and not request.flags:
        return AccountStatus.credit_limit_requires_a_balance_flag
    return AccountStatus.ok


def open_account(request: NewAccount, now_us: int) -> Account:
    """The stored form of a validated request, with zero counters."""
    return Account(
        id=request.id,
        currency=request.currency,
        kind=request.kind,
        owner_ref=request.owner_ref,
        flags=request.flags,
        credit_limit_micros=request.credit_limit_micros,
        debits_pending_micros=0,
        debits_posted_micros=0,
        credits_pending_micros=0,
        credits_posted_micros=0,
        created_at_us=now_us,
    )


def is_storable_text(value: object) -> bool:
    """A ``str`` that encodes as UTF-8 and has no NUL (PostgreSQL text cannot hold one)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
