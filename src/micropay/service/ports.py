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
from micropay.core.netting import NettedPlan
from micropay.core.transfers import Rejection, StoredTransfer


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
