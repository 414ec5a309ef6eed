"""Ports: what the service layer needs from a store. Owned here, by their user.

No driver or ORM type crosses these: adapters take and return core types and
raise only the exceptions defined here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from micropay.core.accounts import Account
from micropay.core.engine import CounterDelta
from micropay.core.netting import AccountState, NettedPlan, PlainOutcome
from micropay.core.transfers import Rejection, StoredTransfer
from micropay.payments.models import Customer, Item, Merchant, TabState
from micropay.payments.processor import (
    ChargeRequest,
    ChargeResult,
    PayoutRequest,
    PayoutResult,
    ProcessorEvent,
    RefundRequest,
    RefundResult,
)
from micropay.payments.records import (
    ChargeRecord,
    EntitlementRecord,
    PurchaseRecord,
    RefundRecord,
)


class StoreError(Exception):
    """Infrastructure failure of a store (not a business rejection)."""


class TransientStoreError(StoreError):
    """Busy, serialization failure, deadlock or concurrent duplicate: retry the operation."""


class UnsafeStoreSettings(StoreError):
    """The database is configured so that an acknowledged write could be lost."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What is already recorded under some transfer ids."""

    transfers: dict[int, StoredTransfer]
    rejections: dict[int, Rejection]


class LedgerWriteTx(Protocol):
    """One write transaction. Writes become durable on a clean exit of ``store.write()``."""

    def lock_accounts(self, ids: Collection[int]) -> dict[int, Account]:
        """Load accounts by id, locking them (in id order) until the transaction ends."""
        ...

    def load_recorded(self, ids: Collection[int]) -> Recorded: ...

    def load_resolutions(self, pending_ids: Collection[int]) -> dict[int, int]:
        """pending_id -> flags of the transfer that resolved that hold."""
        ...

    def insert_accounts(self, accounts: Sequence[Account]) -> None: ...

    def insert_transfers(self, transfers: Sequence[StoredTransfer]) -> None: ...

    def insert_rejections(self, rejections: Sequence[Rejection]) -> None: ...

    def apply_deltas(self, deltas: Mapping[int, CounterDelta]) -> None: ...

    def try_netted(self, plan: NettedPlan) -> bool:
        """Apply a netted plan if every guard holds and no id is taken.

        Returns ``False`` when it cannot; the transaction must then be rolled back.
        """
        ...

    def lock_account_states(self, ids: Collection[int]) -> dict[int, AccountState]:
        """Like ``lock_accounts``, returning only what the plain path reads."""
        ...

    def try_plain(self, outcome: PlainOutcome) -> bool:
        """Write a plain outcome (rows, remembered failures, deltas) if no id is taken.

        The accounts must be locked in this transaction. Returns ``False`` when
        an id is already recorded; the transaction must then be rolled back.
        """
        ...


class LedgerReader(Protocol):
    """Read-only access for lookups, reconcile and export (one consistent snapshot)."""

    def get_accounts(self, ids: Collection[int]) -> dict[int, Account]: ...

    def get_recorded(self, ids: Collection[int]) -> Recorded: ...

    def iter_accounts(self) -> Iterator[Account]: ...

    def iter_transfers(self) -> Iterator[StoredTransfer]:
        """Transfers that took effect, in (created_at_us, id) order."""
        ...

    def expired_hold_ids(self, now_us: int, limit: int) -> list[int]:
        """Ids of unresolved holds whose timeout has passed."""
        ...

    def journal_counters(self) -> dict[int, CounterDelta]:
        """Each account's counters recomputed from its transfers alone."""
        ...

    def balances_by_currency(self) -> dict[str, CounterDelta]:
        """Per currency: each counter summed over all accounts of that currency."""
        ...

    def ill_formed_transfers(self, limit: int) -> list[str]:
        """Transfers that do not balance or point at missing/foreign-currency accounts."""
        ...

    def multiply_resolved_holds(self, limit: int) -> list[str]:
        """Holds resolved more than once, or resolutions of a non-hold."""
        ...

    def integrity_problems(self) -> list[str]:
        """The database's own integrity checks."""
        ...


class LedgerStore(Protocol):
    kind: str

    def write(self) -> AbstractContextManager[LedgerWriteTx]: ...

    def read(self) -> AbstractContextManager[LedgerReader]: ...

    def close(self) -> None: ...


class Processor(Protocol):
    """A card processor: charges saved payment methods, refunds, pays out, sends events.

    Implementations must pass ``idempotency_key`` through to the processor so a
    retry after ``Outcome.retry`` returns the first result, never a second charge.
    They never raise for a business outcome (decline); network and server errors
    become ``Outcome.retry``.
    """

    name: str

    def minor_exponent(self, currency: str) -> int:
        """Decimals of the processor's minor unit for ``currency`` (2 for USD, 0 for JPY)."""
        ...

    def charge(self, request: ChargeRequest) -> ChargeResult: ...

    def refund(self, request: RefundRequest) -> RefundResult: ...

    def payout(self, request: PayoutRequest) -> PayoutResult: ...

    def verify_event(self, payload: bytes, signature_header: str, now_s: int) -> ProcessorEvent:
        """Check signature and timestamp tolerance, then parse; raise ``EventRejected`` if not."""
        ...


class PaymentsWriteTx(LedgerWriteTx, Protocol):
    """A write transaction that also reaches the payment models' tables."""

    def insert_merchant(self, m: Merchant, now_us: int) -> int: ...
    def get_merchant(self, merchant_id: int) -> Merchant | None: ...
    def remember_merchant(self, merchant: Merchant) -> None: ...
    def find_merchant(self, public_id: str) -> Merchant | None: ...
    def insert_customer(self, c: Customer, now_us: int) -> int: ...
    def get_customer(self, customer_id: int) -> Customer | None: ...
    def find_customer(self, public_id: str) -> Customer | None: ...
    def update_customer_tab(
        self, customer_id: int, limit_micros: int, state: TabState, opened_at_us: int
    ) -> None: ...
    def customers_with_tab_period_ended(self, before_us: int, limit: int) -> list[int]: ...
    def update_customer_auto_reload(
        self, customer_id: int, threshold_micros: int, amount_micros: int
    ) -> bool: ...
    def upsert_item(self, item: Item) -> None: ...
    def get_item(self, merchant_id: int, item_ref: str) -> Item | None: ...
    def find_purchase(self, merchant_id: int, idempotency_key: str) -> PurchaseRecord | None: ...
    def pending_purchase(
        self, merchant_id: int, customer_id: int, item_ref: str
    ) -> PurchaseRecord | None: ...
    def purchase_lookups(
        self, merchant_id: int, idempotency_key: str, customer_id: int, item_ref: str
    ) -> tuple[PurchaseRecord | None, PurchaseRecord | None]: ...
    def get_purchase(self, purchase_id: int) -> PurchaseRecord | None: ...
    def insert_purchase(self, p: PurchaseRecord) -> None: ...
    def complete_purchase(self, purchase_id: int, status: str, transfer_id: int | None) -> None: ...
    def add_refund(self, purchase_id: int, amount_micros: int) -> bool: ...
    def active_entitlement(
        self, merchant_id: int, customer_id: int, item_ref: str, now_us: int
    ) -> EntitlementRecord | None: ...
    def insert_entitlement(self, e: EntitlementRecord) -> None: ...
    def revoke_entitlements(self, purchase_id: int) -> None: ...
    def insert_charge(self, c: ChargeRecord) -> None: ...
    def get_charge(self, charge_id: int) -> ChargeRecord | None: ...
    def find_charge(
        self, customer_id: int, purpose: str, client_key: str
    ) -> ChargeRecord | None: ...
    def pending_charge(self, customer_id: int, purpose: str) -> ChargeRecord | None: ...
    def finish_charge(
        self,
        charge_id: int,
        status: str,
        processor_charge_id: str,
        decline_code: str,
        now_us: int,
    ) -> bool: ...
    def reschedule_charge(
        self, charge_id: int, next_attempt_at_us: int, now_us: int, *, declined: bool
    ) -> None: ...
    def due_charges(self, now_us: int, limit: int) -> list[int]: ...
    def charges_for_reconcile(self) -> list[ChargeRecord]: ...
    def find_refund(self, purchase_id: int, idempotency_key: str) -> RefundRecord | None: ...
    def get_refund(self, refund_id: int) -> RefundRecord | None: ...
    def insert_refund(self, r: RefundRecord) -> None: ...
    def finish_refund(self, refund_id: int, status: str, processor_refund_id: str) -> bool: ...
    def set_credit_limit(self, account_id: int, limit_micros: int) -> bool: ...


class PaymentsReader(LedgerReader, Protocol):
    """A read transaction that also reaches the payment models' tables (what reads need)."""

    def get_customer(self, customer_id: int) -> Customer | None: ...


class PaymentsStore(Protocol):
    kind: str

    def write(self) -> AbstractContextManager[PaymentsWriteTx]: ...

    def read(self) -> AbstractContextManager[PaymentsReader]: ...

    def close(self) -> None: ...
