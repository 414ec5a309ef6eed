"""Signed events from the processor, each applied exactly once: charges and disputes.

``ProcessorEvents.handle(payload, signature_header, now_s)``:

1. checks sizes, then asks the processor adapter to verify the signature and
   the timestamp tolerance (``verify_event``). A rejected event (tampered,
   wrong secret, stale, future-dated, malformed) returns ``rejected`` with the
   reason and writes nothing.
2. looks the event up in ``processor_events`` (keyed by processor and event
   id). A duplicate returns the first outcome (``replayed=True``) and has no
   new effect, however often and however concurrently it is delivered: the
   effect and the event row commit in ONE transaction, and the primary key
   turns a concurrent second delivery into a retry that then sees the first.
3. applies the event:

   - ``charge_succeeded`` / ``charge_failed`` for a charge we still hold as
     ``pending`` (the answer to our request was lost): the charge is completed
     by :meth:`ChargeEngine.run`, exactly as a recovery run would, with the
     same idempotency key; the processor replays its first result, and
     ``finish_charge`` credits at most once. A charge already final is left
     alone (``charge_already_recorded``). For a tab settlement in dunning
     this is the due retry, run early. A charge we cannot find (not ours, or
     no metadata) is recorded as ``charge_unknown``.
   - ``dispute_created``: the disputed amount goes back out of the ledger to
     processor clearing (the processor has taken it back):

     * a direct purchase: the merchant's payable is debited, and the
       purchase's entitlement is revoked;
     * a wallet top-up: the wallet is debited as far as it can pay (it never
       goes below zero); the rest is booked to ``dispute_losses``;
     * a tab settlement: booked to ``dispute_losses`` (the customer disputed
       the charge; we do not put it back on the tab to charge again).

     The processor's dispute fee (``FeeSchedule.dispute_fee_micros`` of the
     charge's schedule, 15 USD) is borne by the platform: ``dispute_losses``
     is debited, clearing credited. (The platform chose the processor and
     its schedules; a merchant who sold a 0.10 USD article is not charged
     150 times its price.)
   - ``dispute_closed`` ``won`` (or ``warning_closed``): every movement of
     the dispute is reversed exactly once (a guarded ``open -> won`` update)
     and the entitlement restored unless the purchase was fully refunded;
     ``lost``: nothing more moves.
   - Out of order: a ``dispute_closed`` that arrives before its
     ``dispute_created`` records the dispute as closed (``lost``: the
     movements are made then; ``won``: nothing moves); the late
     ``dispute_created`` is then ``dispute_already_known`` and moves nothing.
   - Everything else (refunds we initiated, payouts, unknown kinds) is
     recorded as ``ignored`` with effect ``not_handled``.

Outcome ``status``: ``applied`` (this delivery changed the books or a
charge/dispute state), ``ignored`` (verified and recorded, nothing to do),
``deferred`` (a dispute for a charge not (yet) succeeded here, e.g. one whose
answer was lost and awaits the recovery run: nothing recorded, so the HTTP
edge should answer non-2xx and the processor delivers it again), or
``rejected`` (not verified; nothing recorded).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from micropay.core.accounts import available_micros
from micropay.core.money import from_minor_units
from micropay.core.transfers import Transfer
from micropay.payments import chart
from micropay.payments.chart import Kind
from micropay.payments.plans import Code
from micropay.payments.processor import EventKind, EventRejected, ProcessorEvent
from micropay.payments.records import ChargePurpose, ChargeRecord, ChargeStatus
from micropay.service.charges import LedgerInvariantError
from micropay.service.ledger import apply_in_transaction
from micropay.service.ports import PaymentsWriteTx

if TYPE_CHECKING:
    from micropay.service.payments import Payments

T = TypeVar("T")
event_payload_bytes_max = 1 << 20
signature_header_chars_max = 4_096
event_id_chars_max = 255
detail_chars_max = 500

DISPUTE_CODE = Code.dispute
DISPUTE_FEE_CODE = Code.dispute_fee
DISPUTE_REVERSAL_CODE = Code.dispute_reversal
WON_STATUSES = frozenset({"won", "warning_closed"})
LOST_STATUSES = frozenset({"lost"})


class EventStatus(enum.Enum):
    applied = "applied"
    ignored = "ignored"
    deferred = "deferred"  # not recorded: the processor should deliver it again later
    rejected = "rejected"


class EventEffect(enum.Enum):
    none = "none"  # rejected: nothing done
    not_handled = "not_handled"
    charge_completed = "charge_completed"
    charge_declined = "charge_declined"
    charge_still_pending = "charge_still_pending"
    charge_already_recorded = "charge_already_recorded"
    charge_unknown = "charge_unknown"
    dispute_opened = "dispute_opened"
    dispute_won = "dispute_won"
    dispute_lost = "dispute_lost"
    dispute_already_known = "dispute_already_known"
    dispute_already_closed = "dispute_already_closed"
    dispute_status_unknown = "dispute_status_unknown"
    dispute_invalid = "dispute_invalid"  # unknown charge, other currency, amount out of range


@dataclass(frozen=True, slots=True)
class EventOutcome:
    status: EventStatus
    effect: EventEffect
    event_id: str = ""
    kind: str = ""
    detail: str = ""
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class EventRecord:
    processor: str
    event_id: str
    kind: str
    object_id: str
    charge_ref: str
    status: str  # "applied" | "ignored"
    effect: str
    detail: str
    created_s: int
    received_at_us: int

    def outcome(self, *, replayed: bool) -> EventOutcome:
        return EventOutcome(
            EventStatus(self.status),
            EventEffect(self.effect),
            self.event_id,
            self.kind,
            self.detail,
            replayed,
        )


@dataclass(frozen=True, slots=True)
class DisputeRecord:
    id: int
    processor: str
    processor_dispute_id: str
    charge_id: int
    purpose: str
    currency: str
    amount_micros: int
    customer_micros: int  # taken back from the wallet
    merchant_micros: int  # taken back from the merchant's payable
    loss_micros: int  # borne by the platform (dispute_losses)
    fee_micros: int  # the processor's dispute fee (dispute_losses)
    status: str  # "open" | "won" | "lost"
    opened_at_us: int
    closed_at_us: int  # 0 while open


class EventsTx(PaymentsWriteTx, Protocol):
    def get_processor_event(self, processor: str, event_id: str) -> EventRecord | None: ...
    def insert_processor_event(self, e: EventRecord) -> None: ...
    def find_charge_id_by_processor_id(self, processor_charge_id: str) -> int | None: ...
    def get_dispute(self, processor: str, processor_dispute_id: str) -> DisputeRecord | None: ...
    def insert_dispute(self, d: DisputeRecord) -> None: ...
    def close_dispute(self, dispute_id: int, status: str, now_us: int) -> bool: ...
    def restore_entitlements(self, purchase_id: int) -> None: ...


@dataclass(frozen=True, slots=True)
class _Effect:
    status: EventStatus
    effect: EventEffect
    detail: str = ""


def _ignored(effect: EventEffect, detail: str = "") -> _Effect:
    return _Effect(EventStatus.ignored, effect, detail)


# --- pure plans --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DisputeParts:
    customer_micros: int
    merchant_micros: int
    loss_micros: int


def dispute_parts(purpose: str, amount_micros: int, wallet_available_micros: int) -> DisputeParts:
    """Who gives the disputed amount back: the wallet as far as it can, the merchant, or us."""
    if purpose == ChargePurpose.direct.value:
        return DisputeParts(0, amount_micros, 0)
    if purpose == ChargePurpose.topup.value:
        from_wallet = max(0, min(amount_micros, wallet_available_micros))
        return DisputeParts(from_wallet, 0, amount_micros - from_wallet)
    return DisputeParts(0, 0, amount_micros)


def dispute_legs(
    dispute: DisputeRecord, customer_id: int, merchant_id: int
) -> list[tuple[int, int, int, int]]:
    """(debit account, credit account, amount, code) of each movement of a dispute.

    Every leg credits processor clearing: the processor took that money back.
    Legs of zero are left out.
    """
    currency = dispute.currency
    clearing = chart.platform_account(Kind.processor_clearing, currency)
    losses = chart.platform_account(Kind.dispute_losses, currency)
    legs = [
        (chart.wallet_account(customer_id, currency), dispute.customer_micros, DISPUTE_CODE),
        (
            chart.payable_account(merchant_id, currency) if merchant_id else 0,
            dispute.merchant_micros,
            DISPUTE_CODE,
        ),
        (losses, dispute.loss_micros, DISPUTE_CODE),
        (losses, dispute.fee_micros, DISPUTE_FEE_CODE),
    ]
    return [(debit, clearing, amount, code) for debit, amount, code in legs if amount > 0]


# --- the service ---------------------------------------------------------------------


class ProcessorEvents:
    def __init__(self, payments: Payments) -> None:
        self.payments = payments

    @property
    def _processor_name(self) -> str:
        return str(self.payments.charges.processor.name)

    def handle(self, payload: bytes, signature_header: str, now_s: int) -> EventOutcome:
        """Verify one delivery and apply its event at most once. See the module docstring."""
        if not isinstance(payload, bytes) or len(payload) > event_payload_bytes_max:
            return EventOutcome(EventStatus.rejected, EventEffect.none, detail="payload too large")
        if (
            not isinstance(signature_header, str)
            or len(signature_header) > signature_header_chars_max
        ):
            return EventOutcome(
                EventStatus.rejected, EventEffect.none, detail="signature header too long"
            )
        try:
            event = self.payments.charges.processor.verify_event(payload, signature_header, now_s)
        except EventRejected as rejected:
            return EventOutcome(EventStatus.rejected, EventEffect.none, detail=str(rejected))
        if not (
            0 < len(event.event_id) <= event_id_chars_max
            and event.event_id.isprintable()
            and len(event.object_id) <= event_id_chars_max
            and len(event.charge_id) <= event_id_chars_max
        ):
            return EventOutcome(EventStatus.rejected, EventEffect.none, detail="event id invalid")
        seen = self._tx(lambda tx: tx.get_processor_event(self._processor_name, event.event_id))
        if seen is not None:
            return seen.outcome(replayed=True)
        if event.kind in (EventKind.charge_succeeded, EventKind.charge_failed):
            return self._charge_event(event, payload)
        if event.kind is EventKind.dispute_created:
            return self._once(event, self._dispute_created)
        if event.kind is EventKind.dispute_closed:
            return self._once(event, self._dispute_closed)
        return self._once(event, lambda tx, e: _ignored(EventEffect.not_handled))

    def event(self, event_id: str) -> EventRecord | None:
        return self._tx(lambda tx: tx.get_processor_event(self._processor_name, event_id))

    def dispute(self, processor_dispute_id: str) -> DisputeRecord | None:
        return self._tx(lambda tx: tx.get_dispute(self._processor_name, processor_dispute_id))

    # --- plumbing ------------------------------------------------------------------

    def _tx(self, operation: Callable[[EventsTx], T]) -> T:
        return self.payments.charges.tx(lambda tx: operation(cast(EventsTx, tx)))

    def _once(
        self, event: ProcessorEvent, apply: Callable[[EventsTx, ProcessorEvent], _Effect]
    ) -> EventOutcome:
        """Apply ``event`` and record it in one transaction, unless it was recorded already."""

        def run(tx: EventsTx) -> EventOutcome:
            first = tx.get_processor_event(self._processor_name, event.event_id)
            if first is not None:
                return first.outcome(replayed=True)
            effect = apply(tx, event)
            if effect.status is EventStatus.deferred:
                return EventOutcome(
                    effect.status, effect.effect, event.event_id, event.kind.value, effect.detail
                )
            return self._record(tx, event, effect)

        return self._tx(run)

    def _record(self, tx: EventsTx, event: ProcessorEvent, effect: _Effect) -> EventOutcome:
        record = EventRecord(
            self._processor_name,
            event.event_id,
            event.kind.value,
            event.object_id,
            event.charge_id,
            effect.status.value,
            effect.effect.value,
            effect.detail[:detail_chars_max],
            event.created_s,
            self.payments.clock(),
        )
        tx.insert_processor_event(record)
        return record.outcome(replayed=False)

    # --- charges -----------------------------------------------------------------------

    def _charge_event(self, event: ProcessorEvent, payload: bytes) -> EventOutcome:
        """Complete a charge still pending here through the charge engine (a recovery run)."""

        def find(tx: EventsTx) -> ChargeRecord | None:
            charge_id = (
                tx.find_charge_id_by_processor_id(event.charge_id) if event.charge_id else None
            )
            if charge_id is None:
                charge_id = _metadata_charge_id(payload)
            return None if charge_id is None else tx.get_charge(charge_id)

        charge = self._tx(find)
        if charge is None:
            effect = _ignored(EventEffect.charge_unknown, "no charge of ours matches")
        elif charge.status != ChargeStatus.pending.value:
            effect = _ignored(EventEffect.charge_already_recorded, f"charge {charge.id}")
        else:
            ran = self.payments.charges.run(charge.id)
            effect = {
                ChargeStatus.succeeded: _Effect(
                    EventStatus.applied, EventEffect.charge_completed, f"charge {charge.id}"
                ),
                ChargeStatus.declined: _Effect(
                    EventStatus.applied, EventEffect.charge_declined, f"charge {charge.id}"
                ),
                ChargeStatus.pending: _ignored(
                    EventEffect.charge_still_pending, f"charge {charge.id} is left to recovery"
                ),
            }[ran.status]
        return self._once(event, lambda tx, e: effect)

    # --- disputes ----------------------------------------------------------------------

    def _dispute_created(self, tx: EventsTx, event: ProcessorEvent) -> _Effect:
        if tx.get_dispute(self._processor_name, event.object_id) is not None:
            return _ignored(EventEffect.dispute_already_known)
        return self._open_dispute(tx, event, "open")

    def _dispute_closed(self, tx: EventsTx, event: ProcessorEvent) -> _Effect:
        won = event.status in WON_STATUSES
        if not won and event.status not in LOST_STATUSES:
            return _ignored(EventEffect.dispute_status_unknown, event.status[:64])
        dispute = tx.get_dispute(self._processor_name, event.object_id)
        now_us = self.payments.clock()
        if dispute is None:  # closed before we heard it was opened
            if not won:
                return self._open_dispute(tx, event, "lost")
            return self._open_dispute(tx, event, "won")
        if not tx.close_dispute(dispute.id, "won" if won else "lost", now_us):
            return _ignored(EventEffect.dispute_already_closed, dispute.status)
        if not won:
            return _Effect(EventStatus.applied, EventEffect.dispute_lost)
        self._reverse(tx, dispute, now_us)
        return _Effect(EventStatus.applied, EventEffect.dispute_won)

    def _open_dispute(self, tx: EventsTx, event: ProcessorEvent, status: str) -> _Effect:
        """Record a dispute; unless it is already ``won``, take the money back out."""
        if not event.object_id or not event.charge_id:
            return _ignored(EventEffect.dispute_invalid, "no dispute or charge id")
        charge_id = tx.find_charge_id_by_processor_id(event.charge_id)
        charge = None if charge_id is None else tx.get_charge(charge_id)
        if charge is None or charge.status != ChargeStatus.succeeded.value:
            # Perhaps a charge whose answer was lost and is still pending here: not
            # recorded, so a redelivery after the recovery run applies it.
            return _Effect(EventStatus.deferred, EventEffect.charge_unknown, "no succeeded charge")
        if event.currency and event.currency.upper() != charge.currency:
            return _ignored(EventEffect.dispute_invalid, "currency differs from the charge")
        exponent = self.payments.charges.processor.minor_exponent(charge.currency)
        amount = (
            from_minor_units(event.amount_minor, exponent)
            if event.amount_minor > 0
            else charge.amount_micros
        )
        if amount > charge.amount_micros:
            return _ignored(EventEffect.dispute_invalid, "amount exceeds the charge")
        customer_id, merchant_id, purchase_id = self._parties(tx, charge)
        now_us = self.payments.clock()
        wallet = chart.wallet_account(customer_id, charge.currency)
        accounts = tx.lock_accounts([wallet])
        available = available_micros(accounts[wallet]) if wallet in accounts else 0
        parts = dispute_parts(charge.purpose, amount, available)
        if status == "won":  # closed in the merchant's favour before we saw it open
            parts = DisputeParts(0, 0, 0)
        dispute = DisputeRecord(
            self.payments.new_id(),
            self._processor_name,
            event.object_id,
            charge.id,
            charge.purpose,
            charge.currency,
            amount,
            parts.customer_micros,
            parts.merchant_micros,
            parts.loss_micros,
            0 if status == "won" else self._dispute_fee(charge),
            status,
            now_us,
            0 if status == "open" else now_us,
        )
        tx.insert_dispute(dispute)
        self._post(tx, dispute, customer_id, merchant_id, now_us, reverse=False)
        if purchase_id and status != "won":
            tx.revoke_entitlements(purchase_id)
        effect = {
            "open": EventEffect.dispute_opened,
            "lost": EventEffect.dispute_lost,
            "won": EventEffect.dispute_won,
        }[status]
        return _Effect(EventStatus.applied, effect, f"charge {charge.id}")

    def _reverse(self, tx: EventsTx, dispute: DisputeRecord, now_us: int) -> None:
        charge = tx.get_charge(dispute.charge_id)
        if charge is None:
            raise LedgerInvariantError(f"dispute {dispute.id} names no charge")
        customer_id, merchant_id, purchase_id = self._parties(tx, charge)
        self._post(tx, dispute, customer_id, merchant_id, now_us, reverse=True)
        purchase = tx.get_purchase(purchase_id) if purchase_id else None
        if purchase is not None and purchase.refunded_micros < purchase.price_micros:
            tx.restore_entitlements(purchase.id)

    def _post(
        self,
        tx: EventsTx,
        dispute: DisputeRecord,
        customer_id: int,
        merchant_id: int,
        now_us: int,
        *,
        reverse: bool,
    ) -> None:
        transfers = []
        for debit, credit, amount, code in dispute_legs(dispute, customer_id, merchant_id):
            transfers.append(
                Transfer(
                    self.payments.new_id(),
                    credit if reverse else debit,
                    debit if reverse else credit,
                    amount,
                    dispute.currency,
                    code=DISPUTE_REVERSAL_CODE if reverse else code,
                    reference=f"dispute:{dispute.id}",
                )
            )
        if not transfers:
            return
        results = apply_in_transaction(tx, transfers, now_us)
        if not all(r.ok for r in results):
            raise LedgerInvariantError(f"dispute {dispute.id} legs refused: {results}")

    def _parties(self, tx: EventsTx, charge: ChargeRecord) -> tuple[int, int, int]:
        """(customer, merchant or 0, purchase or 0) of a charge."""
        if charge.purpose != ChargePurpose.direct.value or not charge.purchase_id:
            return charge.customer_id, 0, 0
        purchase = tx.get_purchase(charge.purchase_id)
        if purchase is None:
            raise LedgerInvariantError(f"direct charge {charge.id} has no purchase")
        return charge.customer_id, purchase.merchant_id, purchase.id

    def _dispute_fee(self, charge: ChargeRecord) -> int:
        for schedule in self.payments.charges.schedules:
            if schedule.name == charge.schedule and schedule.currency == charge.currency:
                return schedule.dispute_fee_micros
        return 0


def _metadata_charge_id(payload: bytes) -> int | None:
    """Our charge id from a verified event's metadata (``{"charge": "<id>"}``), if any.

    Stripe carries it at ``data.object.metadata``; the simulated processor at
    ``metadata``. (Stopgap until ``ProcessorEvent`` carries metadata itself.)
    """
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    metadata = obj.get("metadata") if isinstance(obj, dict) else body.get("metadata")
    value = metadata.get("charge") if isinstance(metadata, dict) else None
    if isinstance(value, str) and value.isdigit() and len(value) <= 19:
        return int(value)
    return None


__all__ = [
    "DisputeRecord",
    "EventEffect",
    "EventOutcome",
    "EventRecord",
    "EventStatus",
    "ProcessorEvents",
    "dispute_legs",
    "dispute_parts",
]
