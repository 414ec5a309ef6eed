"""Gift cards, vouchers and store credit: issue in batches, redeem, spend at a till, expire.

Every operation runs in one database transaction of the :class:`Payments`
instance it is built on (its store, clock, ids and bounded retries), and its
ledger transfers commit atomically with its rows.

Why each card has its own ledger account: the ledger then holds each card's
remaining value exactly (no balance column to keep in step), reconcile proves
it, and the account's debits-must-not-exceed-credits flag refuses an overspend
even if the service had a bug. Two redemptions of one card serialize on that
account's row lock (``lock_accounts``: ``FOR UPDATE`` on PostgreSQL, the
database write lock on SQLite) before either reads what is left.

Codes are stored only as ``HMAC-SHA256(pepper, canonical code)``. A code has 80
random bits, so even plain SHA-256 could not be reversed by guessing; the
pepper (a server secret, passed in) is defense in depth should the database
leak without the secret. It must stay stable: a changed pepper makes every
issued code unknown. Without one, a fixed domain-separation key is used.

Guessing is bounded by a rate limit kept in the database (so it holds across
processes): at most ``failed_attempts_max`` unknown codes per customer, or per
merchant till, per window. Typos caught by the check symbol do not count: they
are not guesses, and a guesser computes valid check symbols anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar, cast

from micropay.core import limits
from micropay.core.accounts import credit_balance_micros
from micropay.core.currencies import is_currency
from micropay.payments import chart
from micropay.payments import gift_cards as gc
from micropay.payments.gift_cards import (
    CardKind,
    GiftCard,
    IssueStatus,
    RedeemStatus,
    RedemptionRecord,
)
from micropay.payments.models import is_valid_key
from micropay.service.charges import LedgerInvariantError, request_hash
from micropay.service.ledger import apply_in_transaction
from micropay.service.payments import Payments
from micropay.service.ports import PaymentsWriteTx

T = TypeVar("T")
_DEFAULT_PEPPER = b"micropay gift card code v1"
_CUSTOMER = "customer"
_MERCHANT = "merchant"


class GiftCardsTx(PaymentsWriteTx, Protocol):
    def insert_gift_card_batch(
        self,
        batch_id: int,
        kind: str,
        merchant_id: int,
        currency: str,
        value_micros: int,
        card_count: int,
        expires_at_us: int,
        idempotency_key: str,
        request_hash: str,
        now_us: int,
    ) -> None: ...
    def find_gift_card_batch(
        self, issuer_id: int, idempotency_key: str
    ) -> tuple[int, str] | None: ...
    def insert_gift_card(self, card: GiftCard) -> int: ...
    def find_gift_card(self, code_hash: str) -> GiftCard | None: ...
    def get_gift_card(self, card_id: int) -> GiftCard | None: ...
    def gift_cards_of_batch(self, batch_id: int) -> list[GiftCard]: ...
    def expiring_gift_cards(self, now_us: int, limit: int) -> list[int]: ...
    def mark_gift_card_expired(self, card_id: int, breakage_transfer_id: int | None) -> bool: ...
    def find_gift_card_redemption(
        self, actor: str, actor_id: int, idempotency_key: str
    ) -> RedemptionRecord | None: ...
    def insert_gift_card_redemption(self, r: RedemptionRecord) -> None: ...
    def gift_card_failures(self, actor: str, actor_id: int, window_start_us: int) -> int: ...
    def add_gift_card_failure(self, actor: str, actor_id: int, window_start_us: int) -> None: ...


@dataclass(frozen=True, slots=True)
class IssuedBatch:
    """The codes are returned here once and never again (only their hashes are stored)."""

    status: IssueStatus
    batch_id: int = 0
    codes: tuple[str, ...] = ()
    card_ids: tuple[int, ...] = ()
    replayed: bool = False  # the batch exists: its codes cannot be shown again


@dataclass(frozen=True, slots=True)
class Redemption:
    status: RedeemStatus
    card_id: int = 0
    amount_micros: int = 0
    remaining_micros: int = 0
    credit_account_id: int = 0
    transfer_id: int = 0
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status is RedeemStatus.ok


@dataclass(frozen=True, slots=True)
class ExpiryRun:
    expired_cards: int
    breakage_micros: dict[str, int]  # per currency (platform and merchant breakage together)


@dataclass(frozen=True, slots=True)
class _Redeem:
    actor: str
    actor_id: int
    code: str  # canonical
    amount_micros: int  # 0: everything left (a redemption into an account)
    key: str


class GiftCards:
    def __init__(
        self,
        payments: Payments,
        *,
        pepper: bytes | None = None,
        batch_max: int = gc.gift_card_batch_max,
        failed_attempts_max: int = gc.gift_card_failed_attempts_max,
        attempt_window_s: int = gc.gift_card_attempt_window_s,
        random_bits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        if not 0 < batch_max <= gc.gift_card_batch_max:
            raise ValueError("batch_max must be 1..gift_card_batch_max")
        self.payments = payments
        self._pepper = pepper or _DEFAULT_PEPPER
        self.batch_max = batch_max
        self.failed_attempts_max = failed_attempts_max
        self.attempt_window_us = attempt_window_s * 1_000_000
        self._random_bits = random_bits

    def code_hash(self, canonical_code: str) -> str:
        return hmac.new(self._pepper, canonical_code.encode(), hashlib.sha256).hexdigest()

    def _tx(self, operation: Callable[[GiftCardsTx], T]) -> T:
        return self.payments.charges.tx(lambda tx: operation(cast(GiftCardsTx, tx)))

    # --- issuing -----------------------------------------------------------

    def issue_gift_cards(
        self,
        count: int,
        value_micros: int,
        currency: str,
        idempotency_key: str,
        *,
        expires_at_us: int = 0,
    ) -> IssuedBatch:
        """Platform gift cards / vouchers: funded by ``gift_card_funding``, any wallet."""
        return self._issue(
            CardKind.platform, 0, count, value_micros, currency, idempotency_key, expires_at_us
        )

    def issue_store_credit(
        self,
        merchant_id: int,
        count: int,
        value_micros: int,
        idempotency_key: str,
        *,
        expires_at_us: int = 0,
    ) -> IssuedBatch:
        """Store credit in the merchant's currency, funded from the merchant's payable.

        Refused (``merchant_funds_insufficient``) when the merchant's earnings do
        not cover the whole batch: a merchant cannot create money it does not hold.
        """
        return self._issue(
            CardKind.store_credit,
            merchant_id,
            count,
            value_micros,
            "",
            idempotency_key,
            expires_at_us,
        )

    def _issue(
        self,
        kind: CardKind,
        merchant_id: int,
        count: int,
        value_micros: int,
        currency: str,
        key: str,
        expires_at_us: int,
    ) -> IssuedBatch:
        if not is_valid_key(key):
            return IssuedBatch(IssueStatus.idempotency_key_invalid)
        if type(count) is not int or not 0 < count <= self.batch_max:
            return IssuedBatch(IssueStatus.count_invalid)
        if type(value_micros) is not int or not 0 < value_micros <= gc.gift_card_value_micros_max:
            return IssuedBatch(IssueStatus.value_invalid)
        if kind is CardKind.platform and not is_currency(currency):
            return IssuedBatch(IssueStatus.currency_invalid)
        now_us = self.payments.clock()
        if type(expires_at_us) is not int or not (
            expires_at_us == 0 or now_us < expires_at_us <= limits.int64_max
        ):
            return IssuedBatch(IssueStatus.expiry_invalid)
        fingerprint = request_hash(
            "gift_card_batch", kind.value, merchant_id, currency, value_micros, count, expires_at_us
        )

        def issue(tx: GiftCardsTx) -> IssuedBatch:
            existing = tx.find_gift_card_batch(merchant_id, key)
            if existing is not None:
                if existing[1] != fingerprint:
                    return IssuedBatch(IssueStatus.idempotency_key_reused)
                cards = tx.gift_cards_of_batch(existing[0])
                return IssuedBatch(
                    IssueStatus.ok, existing[0], (), tuple(c.id for c in cards), replayed=True
                )
            card_currency = currency
            if kind is CardKind.store_credit:
                merchant = tx.get_merchant(merchant_id) if type(merchant_id) is int else None
                if merchant is None:
                    return IssuedBatch(IssueStatus.merchant_not_found)
                card_currency = merchant.currency
                payable_id = chart.payable_account(merchant_id, card_currency)
                payable = tx.lock_accounts([payable_id]).get(payable_id)
                if payable is None or credit_balance_micros(payable) < count * value_micros:
                    return IssuedBatch(IssueStatus.merchant_funds_insufficient)
            return self._issue_in(
                tx,
                kind,
                merchant_id,
                card_currency,
                count,
                value_micros,
                expires_at_us,
                key,
                fingerprint,
                now_us,
            )

        return self._tx(issue)

    def _issue_in(
        self,
        tx: GiftCardsTx,
        kind: CardKind,
        merchant_id: int,
        currency: str,
        count: int,
        value_micros: int,
        expires_at_us: int,
        key: str,
        fingerprint: str,
        now_us: int,
    ) -> IssuedBatch:
        payments = self.payments
        payments._open_in(tx, chart.platform_accounts(currency))
        batch_id = payments.new_id()
        tx.insert_gift_card_batch(
            batch_id,
            kind.value,
            merchant_id,
            currency,
            value_micros,
            count,
            expires_at_us,
            key,
            fingerprint,
            now_us,
        )
        codes: list[str] = []
        cards: list[GiftCard] = []
        for _ in range(count):
            code = gc.format_code(self._random_bits(gc.code_random_bits))
            canonical = gc.parse_code(code)
            if canonical is None:  # pragma: no cover - format_code and parse_code disagree
                raise LedgerInvariantError("a generated code does not parse")
            draft = GiftCard(
                0,
                batch_id,
                self.code_hash(canonical),
                kind,
                merchant_id,
                currency,
                value_micros,
                expires_at_us,
                False,
                now_us,
            )
            card_id = tx.insert_gift_card(draft)
            codes.append(code)
            cards.append(replace(draft, id=card_id))
        payments._open_in(tx, [gc.card_account(c.id, currency) for c in cards])
        transfers = [gc.issue_transfer(payments.new_id(), c) for c in cards]
        results = apply_in_transaction(tx, transfers, now_us)
        refused = [r for r in results if not r.ok]
        if refused:
            raise LedgerInvariantError(f"gift card issue refused by the ledger: {refused[:3]}")
        return IssuedBatch(IssueStatus.ok, batch_id, tuple(codes), tuple(c.id for c in cards))

    # --- redeeming ---------------------------------------------------------

    def redeem(self, customer_id: int, code: str, idempotency_key: str) -> Redemption:
        """Move everything left on a card to the customer: a platform card into the
        wallet, store credit into the customer's store credit at the issuing merchant."""
        return self._redeem(_CUSTOMER, customer_id, code, 0, idempotency_key)

    def redeem_at_pos(
        self, merchant_id: int, code: str, amount_micros: int, idempotency_key: str
    ) -> Redemption:
        """A till spends ``amount_micros`` of a card at ``merchant_id``; the rest stays on it.

        Store credit is refused at any merchant but its issuer (``wrong_merchant``).
        """
        return self._redeem(_MERCHANT, merchant_id, code, amount_micros, idempotency_key)

    def _redeem(
        self, actor: str, actor_id: int, code: str, amount_micros: int, key: str
    ) -> Redemption:
        if not is_valid_key(key):
            return Redemption(RedeemStatus.idempotency_key_invalid)
        if actor == _MERCHANT and (
            type(amount_micros) is not int or not 0 < amount_micros <= gc.gift_card_value_micros_max
        ):
            return Redemption(RedeemStatus.amount_invalid)
        canonical = gc.parse_code(code)
        if canonical is None:
            return Redemption(RedeemStatus.code_malformed)
        request = _Redeem(actor, actor_id, canonical, amount_micros, key)
        return self._tx(lambda tx: self._redeem_in(tx, request))

    def _redeem_in(self, tx: GiftCardsTx, request: _Redeem) -> Redemption:
        now_us = self.payments.clock()
        code_hash = self.code_hash(request.code)
        fingerprint = request_hash(
            "gift_card_redeem", request.actor, request.actor_id, code_hash, request.amount_micros
        )
        first = tx.find_gift_card_redemption(request.actor, request.actor_id, request.key)
        if first is not None:
            if first.request_hash != fingerprint:
                return Redemption(RedeemStatus.idempotency_key_reused)
            return Redemption(
                RedeemStatus.ok,
                first.card_id,
                first.amount_micros,
                first.remaining_micros,
                first.credit_account_id,
                first.transfer_id,
                replayed=True,
            )
        currency = ""
        if request.actor == _CUSTOMER:
            customer = tx.get_customer(request.actor_id)
            if customer is None:
                return Redemption(RedeemStatus.customer_not_found)
            currency = customer.currency
        else:
            merchant = tx.get_merchant(request.actor_id)
            if merchant is None:
                return Redemption(RedeemStatus.merchant_not_found)
            currency = merchant.currency
        window_start_us = now_us - now_us % self.attempt_window_us
        failures = tx.gift_card_failures(request.actor, request.actor_id, window_start_us)
        if failures >= self.failed_attempts_max:
            return Redemption(RedeemStatus.too_many_attempts)
        found = tx.find_gift_card(code_hash)
        if found is None:
            tx.add_gift_card_failure(request.actor, request.actor_id, window_start_us)
            return Redemption(RedeemStatus.code_not_found)
        # Lock the card's account, then re-read the card: what we see is final.
        account_id = gc.card_account_id(found.id, found.currency)
        account = tx.lock_accounts([account_id])[account_id]
        card = tx.get_gift_card(found.id) or found
        remaining = credit_balance_micros(account)
        if request.actor == _CUSTOMER and card.kind is CardKind.store_credit:
            currency = card.currency  # store credit stays in the merchant's currency
        refusal = gc.redeem_refusal(
            card,
            now_us=now_us,
            remaining_micros=remaining,
            currency=currency,
            merchant_id=request.actor_id if request.actor == _MERCHANT else None,
            amount_micros=request.amount_micros,
        )
        if refusal is not None:
            return Redemption(refusal, card.id)
        if request.actor == _MERCHANT:
            amount, code = request.amount_micros, gc.Code.gift_card_pos
            credit_id = chart.payable_account(request.actor_id, card.currency)
        else:
            amount, code = remaining, gc.Code.gift_card_redeem
            try:
                credit_id = gc.redeem_destination(card, request.actor_id)
            except ValueError:
                return Redemption(RedeemStatus.store_credit_unavailable, card.id)
            if card.kind is CardKind.store_credit:
                self.payments._open_in(
                    tx, [gc.store_credit_account(request.actor_id, card.merchant_id, card.currency)]
                )
        transfer = gc.spend_transfer(self.payments.new_id(), card, credit_id, amount, code)
        [result] = apply_in_transaction(tx, [transfer], now_us)
        if not result.ok:
            raise LedgerInvariantError(f"gift card redemption refused: {result.status.value}")
        record = RedemptionRecord(
            self.payments.new_id(),
            card.id,
            request.actor,
            request.actor_id,
            request.key,
            fingerprint,
            amount,
            remaining - amount,
            credit_id,
            transfer.id,
            now_us,
        )
        tx.insert_gift_card_redemption(record)
        return Redemption(
            RedeemStatus.ok, card.id, amount, remaining - amount, credit_id, transfer.id
        )

    # --- expiry --------------------------------------------------------------

    def expire_gift_cards(
        self, now_us: int | None = None, *, limit: int = gc.gift_card_expiries_per_run_max
    ) -> ExpiryRun:
        """Move what is left on expired cards to breakage, exactly once per card.

        A platform card's rest becomes ``breakage_income``; store credit's rest
        goes back to the issuing merchant, who funded it. Safe to run
        concurrently: each card's account is locked and its ``expired`` flag set
        with a guarded update in the same transaction as its breakage transfer.
        """
        at_us = self.payments.clock() if now_us is None else now_us
        limit = max(1, min(limit, gc.gift_card_expiries_per_run_max))

        def expire(tx: GiftCardsTx) -> ExpiryRun:
            ids = tx.expiring_gift_cards(at_us, limit)
            cards = [c for c in (tx.get_gift_card(i) for i in ids) if c is not None]
            accounts = tx.lock_accounts([gc.card_account_id(c.id, c.currency) for c in cards])
            breakage: dict[str, int] = {}
            expired = 0
            for stale in cards:
                card = tx.get_gift_card(stale.id)
                if card is None or card.expired:
                    continue  # a concurrent run got there first
                account = accounts[gc.card_account_id(card.id, card.currency)]
                remaining = credit_balance_micros(account)
                transfer_id = None
                if remaining > 0:
                    transfer = gc.breakage_transfer(self.payments.new_id(), card, remaining)
                    [result] = apply_in_transaction(tx, [transfer], at_us)
                    if not result.ok:
                        raise LedgerInvariantError(f"breakage refused: {result.status.value}")
                    transfer_id = transfer.id
                    breakage[card.currency] = breakage.get(card.currency, 0) + remaining
                if not tx.mark_gift_card_expired(card.id, transfer_id):
                    raise LedgerInvariantError(f"gift card {card.id} expired twice")
                expired += 1
            return ExpiryRun(expired, breakage)

        return self._tx(expire)

    # --- reads -------------------------------------------------------------

    def remaining_micros(self, card_id: int) -> int:
        """What is left on a card (support staff look-up by card number, not by code)."""

        def read(tx: GiftCardsTx) -> int:
            card = tx.get_gift_card(card_id)
            if card is None:
                raise KeyError(f"no gift card {card_id}")
            account_id = gc.card_account_id(card.id, card.currency)
            return credit_balance_micros(tx.lock_accounts([account_id])[account_id])

        return self._tx(read)

    def card(self, card_id: int) -> GiftCard | None:
        return self._tx(lambda tx: tx.get_gift_card(card_id))
