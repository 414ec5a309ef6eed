"""A plain-Python reference model of the ledger, for property-based tests.

Written from the documentation (``core/statuses.py``, ``core/transfers.py``,
``core/accounts.py``), independently of :mod:`micropay.core.engine`: it does
not import the engine, it keeps its state in plain dicts, and it undoes a
failed linked chain by restoring a copy of the whole state taken at the start
of the chain (the engine keeps an undo log instead).

Semantics modelled:

- request checks in order of precedence (not remembered);
- idempotency: a recorded id with the same request replays its first result,
  with a different request gives ``id_already_used_with_different_request``;
- state checks in order of precedence, remembered on failure;
- linked chains, all or nothing; the other members of a failed chain get
  ``linked_event_failed`` (remembered when the failure is), except members
  whose id was recorded before, which keep their first result; a member that
  replays a failure fails its chain (it did not apply, so nothing does);
- holds: pending with timeout, post (full or partial), void, expire;
- the two balance flags with a credit limit.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass

from micropay.core.accounts import (
    AccountResult,
    NewAccount,
)
from micropay.core.currencies import CURRENCY_EXPONENTS
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import StoredTransfer, Transfer, TransferResult

S = TransferStatus

INT64_MAX = 2**63 - 1
ID_MAX = INT64_MAX - 1
SYSTEM_ID_MIN = 2**62
TIMEOUT_S_MAX = 2**31 - 1
CODE_MAX = 65_535
REFERENCE_CHARS_MAX = 128
METADATA_BYTES_MAX = 4_096
US_PER_S = 1_000_000

LINKED, PENDING, POST, VOID, EXPIRE = 1, 2, 4, 8, 16
KNOWN_FLAGS = LINKED | PENDING | POST | VOID | EXPIRE
RESOLVE = POST | VOID | EXPIRE
WALLET = 1  # debits must not exceed credits
TAB_MIRROR = 2  # credits must not exceed debits

_ORDER = list(TransferStatus)
_IDEMPOTENCY_RANK = _ORDER.index(S.id_already_used_with_different_request)
_KIND = re.compile(r"[a-z][a-z0-9_]*\Z")


def remembered(status: TransferStatus) -> bool:
    """State-check failures (declared after the idempotency status) are remembered."""
    return _ORDER.index(status) > _IDEMPOTENCY_RANK


@dataclass
class ModelAccount:
    id: int
    currency: str
    kind: str
    owner_ref: str
    flags: int
    credit_limit_micros: int
    dp: int = 0  # debits pending
    dpo: int = 0  # debits posted
    cp: int = 0  # credits pending
    cpo: int = 0  # credits posted

    def counters(self) -> tuple[int, int, int, int]:
        return (self.dp, self.dpo, self.cp, self.cpo)


@dataclass
class _State:
    accounts: dict[int, ModelAccount]
    transfers: dict[int, StoredTransfer]  # took effect
    rejections: dict[int, tuple[Transfer, TransferStatus]]  # remembered failures
    resolved: dict[int, int]  # hold id -> kind flag of its resolution


class LedgerModel:
    """The ledger as a reference model: same inputs, expected outputs."""

    def __init__(self) -> None:
        self.state = _State({}, {}, {}, {})

    # --- reads -----------------------------------------------------------

    @property
    def accounts(self) -> dict[int, ModelAccount]:
        return self.state.accounts

    @property
    def transfers(self) -> dict[int, StoredTransfer]:
        return self.state.transfers

    @property
    def resolved(self) -> dict[int, int]:
        return self.state.resolved

    @property
    def rejections(self) -> dict[int, tuple[Transfer, TransferStatus]]:
        return self.state.rejections

    def counters(self) -> dict[int, tuple[int, int, int, int]]:
        return {i: a.counters() for i, a in self.state.accounts.items()}

    def open_holds(self) -> list[StoredTransfer]:
        return [
            t
            for t in self.state.transfers.values()
            if t.flags & PENDING and t.id not in self.state.resolved
        ]

    # --- accounts --------------------------------------------------------

    def create_accounts(self, requests: Sequence[NewAccount]) -> list[AccountResult]:
        results = []
        for r in requests:
            status = _check_account(r)
            if status is not AccountStatus.ok:
                results.append(AccountResult(r.id if _is_int(r.id) else 0, status))
                continue
            known = self.state.accounts.get(r.id)
            if known is None:
                self.state.accounts[r.id] = ModelAccount(
                    r.id, r.currency, r.kind, r.owner_ref, r.flags, r.credit_limit_micros
                )
                results.append(AccountResult(r.id, AccountStatus.ok))
            elif (known.currency, known.kind, known.owner_ref, known.flags) == (
                r.currency,
                r.kind,
                r.owner_ref,
                r.flags,
            ) and known.credit_limit_micros == r.credit_limit_micros:
                results.append(AccountResult(r.id, AccountStatus.ok, replayed=True))
            else:
                results.append(AccountResult(r.id, AccountStatus.exists_with_different_fields))
        return results

    # --- transfers -------------------------------------------------------

    def submit(
        self, batch: Sequence[Transfer], now_us: int, *, system: bool = False
    ) -> list[TransferResult]:
        results: list[TransferResult] = []
        chain: list[Transfer] = []
        for t in batch:
            chain.append(t)
            if not t.flags & LINKED:
                results.extend(self._chain(chain, now_us, open_chain=False, system=system))
                chain = []
        if chain:
            results.extend(self._chain(chain, now_us, open_chain=True, system=system))
        return results

    def expire_holds(self, now_us: int, limit: int = 1_000) -> list[TransferResult]:
        due = sorted(
            (t for t in self.open_holds() if t.expires_at_us and t.expires_at_us <= now_us),
            key=lambda t: (t.expires_at_us, t.id),
        )[:limit]
        batch = [
            Transfer(
                id=SYSTEM_ID_MIN + hold.id % SYSTEM_ID_MIN,
                debit_account_id=0,
                credit_account_id=0,
                amount_micros=0,
                currency="",
                flags=EXPIRE,
                pending_id=hold.id,
            )
            for hold in due
        ]
        return self.submit(batch, now_us, system=True) if batch else []

    # --- one chain -------------------------------------------------------

    def _chain(
        self, chain: list[Transfer], now_us: int, *, open_chain: bool, system: bool = False
    ) -> list[TransferResult]:
        checks = [_check_request(t, system) for t in chain]
        if open_chain:
            checks[-1] = S.linked_event_chain_open
        for index, status in enumerate(checks):
            if status is not S.ok:
                return [
                    TransferResult(
                        t.id if type(t.id) is int else 0,
                        status if i == index else S.linked_event_failed,
                    )
                    for i, t in enumerate(chain)
                ]
        saved = copy.deepcopy(self.state)
        results: list[TransferResult] = []
        failure: TransferStatus | None = None
        for t in chain:
            earlier = self._replay(t)
            if earlier is not None:
                results.append(earlier)
                if earlier.status is not S.ok:
                    # A conflict, or the replay of a remembered failure: the member
                    # did not apply, so (all or nothing) neither does the chain.
                    # The engine differs for a replayed failure: see
                    # test_a_chain_with_a_replayed_failure_applies_nothing.
                    failure = earlier.status
                    break
                continue
            status = self._apply(t, now_us)
            results.append(TransferResult(t.id, status))
            if status is not S.ok:
                failure = status
                break
        if failure is None:
            return results
        self.state = saved  # all or nothing
        failed_at = len(results) - 1
        final: list[TransferResult] = []
        for index, t in enumerate(chain):
            if index != failed_at or results[failed_at].replayed:
                earlier = self._replay(t)
                if earlier is not None:
                    final.append(earlier)
                    continue
            status = failure if index == failed_at else S.linked_event_failed
            final.append(TransferResult(t.id, status))
            if remembered(failure):
                self.state.rejections[t.id] = (t, status)
        return final

    def _replay(self, t: Transfer) -> TransferResult | None:
        done = self.state.transfers.get(t.id)
        if done is not None:
            if _same_request(t, done):
                return TransferResult(t.id, S.ok, replayed=True)
            return TransferResult(t.id, S.id_already_used_with_different_request)
        failed = self.state.rejections.get(t.id)
        if failed is not None:
            request, status = failed
            if request == t:
                return TransferResult(t.id, status, replayed=True)
            return TransferResult(t.id, S.id_already_used_with_different_request)
        return None

    def _apply(self, t: Transfer, now_us: int) -> TransferStatus:
        if t.flags & RESOLVE:
            return self._resolve(t, now_us)
        accounts = self.state.accounts
        debit = accounts.get(t.debit_account_id)
        if debit is None:
            return S.debit_account_not_found
        credit = accounts.get(t.credit_account_id)
        if credit is None:
            return S.credit_account_not_found
        if debit.currency != credit.currency:
            return S.accounts_must_have_the_same_currency
        if t.currency != debit.currency:
            return S.transfer_must_have_the_same_currency_as_accounts
        amount = t.amount_micros
        hold = bool(t.flags & PENDING)
        if hold and debit.dp + amount > INT64_MAX:
            return S.overflows_debits_pending
        if hold and credit.cp + amount > INT64_MAX:
            return S.overflows_credits_pending
        if not hold and debit.dpo + amount > INT64_MAX:
            return S.overflows_debits_posted
        if not hold and credit.cpo + amount > INT64_MAX:
            return S.overflows_credits_posted
        if debit.dp + debit.dpo + amount > INT64_MAX:
            return S.overflows_debits
        if credit.cp + credit.cpo + amount > INT64_MAX:
            return S.overflows_credits
        expires_at_us = 0
        if hold and t.timeout_s:
            expires_at_us = now_us + t.timeout_s * US_PER_S
            if expires_at_us > INT64_MAX:
                return S.overflows_timeout
        if debit.flags & WALLET and (
            debit.dp + debit.dpo + amount - debit.cpo > debit.credit_limit_micros
        ):
            return S.exceeds_credits
        if credit.flags & TAB_MIRROR and (
            credit.cp + credit.cpo + amount - credit.dpo > credit.credit_limit_micros
        ):
            return S.exceeds_debits
        if hold:
            debit.dp += amount
            credit.cp += amount
        else:
            debit.dpo += amount
            credit.cpo += amount
        self.state.transfers[t.id] = StoredTransfer(
            t.id,
            t.debit_account_id,
            t.credit_account_id,
            amount,
            t.currency,
            t.code,
            t.flags,
            0,
            t.timeout_s,
            t.reference,
            t.metadata,
            now_us,
            expires_at_us,
        )
        return S.ok

    def _resolve(self, t: Transfer, now_us: int) -> TransferStatus:
        hold = self.state.transfers.get(t.pending_id)
        if hold is None:
            return S.pending_transfer_not_found
        if not hold.flags & PENDING:
            return S.pending_transfer_not_pending
        if t.debit_account_id not in (0, hold.debit_account_id):
            return S.pending_transfer_has_different_debit_account_id
        if t.credit_account_id not in (0, hold.credit_account_id):
            return S.pending_transfer_has_different_credit_account_id
        if t.currency not in ("", hold.currency):
            return S.pending_transfer_has_different_currency
        kind = t.flags & RESOLVE
        if kind == POST and t.amount_micros > hold.amount_micros:
            return S.exceeds_pending_transfer_amount
        if kind != POST and t.amount_micros not in (0, hold.amount_micros):
            return S.pending_transfer_has_different_amount
        previous = self.state.resolved.get(hold.id)
        if previous == POST:
            return S.pending_transfer_already_posted
        if previous == VOID:
            return S.pending_transfer_already_voided
        if previous == EXPIRE:
            return S.pending_transfer_expired
        is_expired = hold.expires_at_us != 0 and now_us >= hold.expires_at_us
        if kind == EXPIRE and not is_expired:
            return S.pending_transfer_not_expired
        if kind != EXPIRE and is_expired:
            return S.pending_transfer_expired
        debit = self.state.accounts.get(hold.debit_account_id)
        if debit is None:
            return S.debit_account_not_found
        credit = self.state.accounts.get(hold.credit_account_id)
        if credit is None:
            return S.credit_account_not_found
        debit.dp -= hold.amount_micros
        credit.cp -= hold.amount_micros
        amount = hold.amount_micros
        if kind == POST:
            amount = t.amount_micros or hold.amount_micros
            debit.dpo += amount
            credit.cpo += amount
        self.state.resolved[hold.id] = kind
        self.state.transfers[t.id] = StoredTransfer(
            t.id,
            hold.debit_account_id,
            hold.credit_account_id,
            amount,
            hold.currency,
            t.code,
            t.flags,
            hold.id,
            0,
            t.reference,
            t.metadata,
            now_us,
            0,
        )
        return S.ok


def _same_request(t: Transfer, done: StoredTransfer) -> bool:
    """Does ``t`` ask for what ``done`` recorded? A post/void/expire may leave blanks."""
    inherits = bool(t.flags & RESOLVE)

    def same(asked: object, stored: object, blank: object) -> bool:
        return asked == stored or (inherits and asked == blank)

    return (
        (t.flags, t.pending_id, t.code, t.timeout_s, t.reference, t.metadata)
        == (done.flags, done.pending_id, done.code, done.timeout_s, done.reference, done.metadata)
        and same(t.debit_account_id, done.debit_account_id, 0)
        and same(t.credit_account_id, done.credit_account_id, 0)
        and same(t.currency, done.currency, "")
        and same(t.amount_micros, done.amount_micros, 0)
    )


def _is_int(value: object) -> bool:
    return type(value) is int


def _storable(text: object) -> bool:
    if not isinstance(text, str) or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_request(t: Transfer, system: bool = False) -> TransferStatus:
    """Request checks, written from the status list's order of precedence."""
    if not _is_int(t.id) or t.id < 1:
        return S.id_must_be_positive
    if t.id > ID_MAX:
        return S.id_must_not_exceed_max
    if t.id >= SYSTEM_ID_MIN and not system:
        return S.id_reserved_for_system
    flags = int(t.flags) if isinstance(t.flags, int) and not isinstance(t.flags, bool) else -1
    if flags < 0 or flags & ~KNOWN_FLAGS:
        return S.flags_are_unknown
    kinds = [k for k in (PENDING, POST, VOID, EXPIRE) if flags & k]
    if len(kinds) > 1:
        return S.flags_are_mutually_exclusive
    if flags & EXPIRE and not system:
        return S.expire_reserved_for_system
    resolving = bool(flags & RESOLVE)
    lowest = 0 if resolving else 1
    for value, status in (
        (t.debit_account_id, S.debit_account_id_must_be_positive),
        (t.credit_account_id, S.credit_account_id_must_be_positive),
    ):
        if not _is_int(value) or not lowest <= value <= ID_MAX:
            return status
    if t.debit_account_id != 0 and t.debit_account_id == t.credit_account_id:
        return S.accounts_must_be_different
    if not _is_int(t.pending_id):
        return S.pending_id_must_be_positive
    if not resolving and t.pending_id != 0:
        return S.pending_id_must_be_zero
    if resolving and not 1 <= t.pending_id <= ID_MAX:
        return S.pending_id_must_be_positive
    if resolving and t.pending_id == t.id:
        return S.pending_id_must_be_different
    if not _is_int(t.timeout_s):
        return S.timeout_must_be_in_range
    if t.timeout_s != 0 and not flags & PENDING:
        return S.timeout_reserved_for_pending_transfer
    if not 0 <= t.timeout_s <= TIMEOUT_S_MAX:
        return S.timeout_must_be_in_range
    if not _is_int(t.amount_micros):
        return S.amount_must_be_an_int
    if t.amount_micros < 0 or (t.amount_micros == 0 and not resolving):
        return S.amount_must_be_positive
    if t.amount_micros > INT64_MAX:
        return S.amount_exceeds_max
    if not (t.currency in CURRENCY_EXPONENTS or (resolving and t.currency == "")):
        return S.currency_must_be_valid
    if not _is_int(t.code) or not 0 <= t.code <= CODE_MAX:
        return S.code_must_be_in_range
    if not (_storable(t.reference) and _storable(t.metadata)):
        return S.text_must_be_valid
    if len(t.reference) > REFERENCE_CHARS_MAX:
        return S.reference_too_long
    if len(t.metadata.encode("utf-8")) > METADATA_BYTES_MAX:
        return S.metadata_too_large
    return S.ok


def _check_account(r: NewAccount) -> AccountStatus:
    A = AccountStatus
    if not _is_int(r.id) or r.id < 1:
        return A.id_must_be_positive
    if r.id > ID_MAX:
        return A.id_must_not_exceed_max
    if not _is_int(r.flags) or r.flags < 0 or r.flags & ~3:
        return A.flags_are_unknown
    if r.flags == 3:
        return A.flags_are_mutually_exclusive
    if r.currency not in CURRENCY_EXPONENTS:
        return A.currency_must_be_valid
    if not isinstance(r.kind, str) or len(r.kind) > 32 or not _KIND.match(r.kind):
        return A.kind_must_be_valid
    if not _storable(r.owner_ref):
        return A.text_must_be_valid
    if len(r.owner_ref) > 128:
        return A.owner_ref_too_long
    if not _is_int(r.credit_limit_micros) or not 0 <= r.credit_limit_micros <= INT64_MAX:
        return A.credit_limit_must_be_in_range
    if r.credit_limit_micros and not r.flags:
        return A.credit_limit_requires_a_balance_flag
    return A.ok
