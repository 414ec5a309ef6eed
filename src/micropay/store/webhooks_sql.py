"""SQL of webhooks out (``micropay.webhooks``): endpoints, the outbox, deliveries, attempts.

A mixin for the adapters' transaction classes (like :class:`PaymentsSql`): it
uses their cursor (``self._cur``) and placeholder rewriting (``self._sql``).
Until it is mixed into ``PaymentsSql``, :func:`micropay.webhooks.outbox.webhooks_tx`
binds it to a transaction's cursor.

Deliveries are leased like jobs: a guarded UPDATE claims due, pending,
unleased (or lease-expired) rows and counts an attempt; only the lease's owner
may record the outcome. A dispatcher that dies mid-delivery leaves its lease to
expire and the delivery is sent again, with the same webhook-id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from micropay.store.sql import Cursor

ENDPOINT_COLUMNS = (
    "id, merchant_id, url, secret, live, enabled, events, disabled_reason, created_at_us,"
    " updated_at_us"
)
EVENT_COLUMNS = "id, merchant_id, type, object_id, payload, created_at_us"
DELIVERY_COLUMNS = (
    "id, event_id, endpoint_id, state, attempts, next_attempt_at_us, lease_owner,"
    " lease_expires_at_us, last_status, created_at_us, finished_at_us"
)
ATTEMPT_COLUMNS = "id, delivery_id, attempt, status_code, latency_us, error, attempted_at_us"


@dataclass(frozen=True, slots=True)
class EndpointRow:
    id: int
    merchant_id: int
    url: str
    secret: str
    live: bool
    enabled: bool
    events: str  # space-separated event types, "*" for all
    disabled_reason: str | None
    created_at_us: int
    updated_at_us: int

    def wants(self, event_type: str) -> bool:
        types = self.events.split()
        return "*" in types or event_type in types


@dataclass(frozen=True, slots=True)
class EventRow:
    id: str
    merchant_id: int
    type: str
    object_id: int
    payload: str
    created_at_us: int


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    event_id: str
    endpoint_id: int
    state: str  # pending | succeeded | failed | cancelled
    attempts: int
    next_attempt_at_us: int
    lease_owner: str | None
    lease_expires_at_us: int | None
    last_status: int | None
    created_at_us: int
    finished_at_us: int | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: int
    delivery_id: int
    attempt: int
    status_code: int | None
    latency_us: int
    error: str
    attempted_at_us: int


def _endpoint(r: Sequence[Any]) -> EndpointRow:
    return EndpointRow(
        int(r[0]), int(r[1]), r[2], r[3], bool(r[4]), bool(r[5]), r[6], r[7], int(r[8]), int(r[9])
    )


def _event(r: Sequence[Any]) -> EventRow:
    return EventRow(r[0], int(r[1]), r[2], int(r[3]), r[4], int(r[5]))


def _delivery(r: Sequence[Any]) -> DeliveryRow:
    return DeliveryRow(
        int(r[0]), r[1], int(r[2]), r[3], int(r[4]), int(r[5]), r[6], r[7], r[8], int(r[9]), r[10]
    )


def _attempt(r: Sequence[Any]) -> AttemptRow:
    return AttemptRow(int(r[0]), int(r[1]), int(r[2]), r[3], int(r[4]), r[5], int(r[6]))


class WebhooksSql:
    _cur: Cursor

    def _sql(self, text: str) -> str:
        return text

    def _webhooks_on_postgres(self) -> bool:
        return self._sql("?") != "?"

    # --- endpoints ------------------------------------------------------------

    def insert_webhook_endpoint(
        self, merchant_id: int, url: str, secret: str, live: bool, events: str, now_us: int
    ) -> EndpointRow:
        self._cur.execute(
            self._sql(
                "INSERT INTO webhook_endpoints (merchant_id, url, secret, live, enabled, events,"
                " disabled_reason, created_at_us, updated_at_us)"
                f" VALUES (?,?,?,?,?,?,NULL,?,?) RETURNING {ENDPOINT_COLUMNS}"
            ),
            (merchant_id, url, secret, live, True, events, now_us, now_us),
        )
        return _endpoint(self._cur.fetchall()[0])

    def get_webhook_endpoint(self, endpoint_id: int) -> EndpointRow | None:
        self._cur.execute(
            self._sql(f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?"),
            (endpoint_id,),
        )
        rows = self._cur.fetchall()
        return _endpoint(rows[0]) if rows else None

    def list_webhook_endpoints(self, merchant_id: int) -> list[EndpointRow]:
        self._cur.execute(
            self._sql(
                f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"
                " WHERE merchant_id = ? ORDER BY id"
            ),
            (merchant_id,),
        )
        return [_endpoint(r) for r in self._cur.fetchall()]

    def set_webhook_endpoint_enabled(
        self, endpoint_id: int, enabled: bool, reason: str | None, now_us: int
    ) -> bool:
        self._cur.execute(
            self._sql(
                "UPDATE webhook_endpoints SET enabled = ?, disabled_reason = ?, updated_at_us = ?"
                " WHERE id = ?"
            ),
            (enabled, None if enabled else reason, now_us, endpoint_id),
        )
        return self._cur.rowcount == 1

    # --- the outbox -------------------------------------------------------------

    def webhook_customer_owner(self, customer_id: int) -> int:
        """The merchant that owns a customer through the API, else 0 (the platform)."""
        self._cur.execute(
            self._sql("SELECT merchant_id FROM api_customers WHERE customer_id = ?"),
            (customer_id,),
        )
        rows = self._cur.fetchall()
        return int(rows[0][0]) if rows else 0

    def insert_webhook_event(self, event: EventRow) -> bool:
        """Write one event; False (nothing written) if this (type, object) was already emitted."""
        self._cur.execute(
            self._sql(
                f"INSERT INTO webhook_events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (type, object_id) DO NOTHING"
            ),
            (
                event.id,
                event.merchant_id,
                event.type,
                event.object_id,
                event.payload,
                event.created_at_us,
            ),
        )
        return self._cur.rowcount == 1

    def get_webhook_event(self, event_id: str) -> EventRow | None:
        self._cur.execute(
            self._sql(f"SELECT {EVENT_COLUMNS} FROM webhook_events WHERE id = ?"), (event_id,)
        )
        rows = self._cur.fetchall()
        return _event(rows[0]) if rows else None

    def list_webhook_events(self, merchant_id: int | None, limit: int) -> list[EventRow]:
        where = "" if merchant_id is None else " WHERE merchant_id = ?"
        params: tuple[object, ...] = (limit,) if merchant_id is None else (merchant_id, limit)
        self._cur.execute(
            self._sql(
                f"SELECT {EVENT_COLUMNS} FROM webhook_events{where}"
                " ORDER BY created_at_us, id LIMIT ?"
            ),
            params,
        )
        return [_event(r) for r in self._cur.fetchall()]

    # --- invariant 9 -------------------------------------------------------------

    def outbox_problems(self, limit: int) -> list[str]:
        """Events without their committed change, and changes without their event.

        Every event must name an object that exists (a sale that succeeded, a
        refund, a charge). Every successful sale of a merchant that has events
        must have its own: the outbox writes it in the sale's transaction, and a
        merchant's sales are all served with the outbox (the API) or none are
        (a library user without webhooks).
        """
        problems: list[str] = []
        objects = (
            ("purchase.succeeded", "purchases", " AND o.status = 'ok'"),
            ("refund.succeeded", "refunds", ""),
            ("topup.succeeded", "charges", ""),
            ("topup.declined", "charges", ""),
            ("tab.settled", "charges", ""),
            ("tab.frozen", "charges", ""),
        )
        for event_type, table, condition in objects:
            self._cur.execute(
                self._sql(
                    "SELECT e.id, e.object_id FROM webhook_events e WHERE e.type = ? AND NOT"
                    f" EXISTS (SELECT 1 FROM {table} o WHERE o.id = e.object_id{condition})"
                    " ORDER BY e.id LIMIT ?"
                ),
                (event_type, limit),
            )
            problems += [
                f"event {event_id} ({event_type}) names {table} row {object_id}, which is not there"
                for event_id, object_id in self._cur.fetchall()
            ]
        # A merchant whose sales are served with the outbox has an event for each.
        self._cur.execute(
            self._sql(
                "SELECT p.id FROM purchases p WHERE p.status = 'ok' AND p.merchant_id IN"
                " (SELECT merchant_id FROM webhook_events) AND NOT EXISTS (SELECT 1 FROM"
                " webhook_events e WHERE e.type = ? AND e.object_id = p.id) ORDER BY p.id LIMIT ?"
            ),
            ("purchase.succeeded", limit),
        )
        problems += [
            f"purchases row {purchase_id} has no purchase.succeeded event"
            for (purchase_id,) in self._cur.fetchall()
        ]
        return problems

    # --- deliveries -------------------------------------------------------------

    def insert_webhook_delivery(self, event_id: str, endpoint_id: int, now_us: int) -> bool:
        self._cur.execute(
            self._sql(
                "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, attempts,"
                " next_attempt_at_us, lease_owner, lease_expires_at_us, last_status,"
                " created_at_us, finished_at_us)"
                " VALUES (?,?,'pending',0,?,NULL,NULL,NULL,?,NULL)"
                " ON CONFLICT (event_id, endpoint_id) DO NOTHING"
            ),
            (event_id, endpoint_id, now_us, now_us),
        )
        return self._cur.rowcount == 1

    def get_webhook_delivery(self, delivery_id: int) -> DeliveryRow | None:
        self._cur.execute(
            self._sql(f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?"),
            (delivery_id,),
        )
        rows = self._cur.fetchall()
        return _delivery(rows[0]) if rows else None

    def list_webhook_deliveries(
        self, endpoint_id: int | None = None, state: str | None = None, limit: int = 1_000
    ) -> list[DeliveryRow]:
        clauses: list[str] = []
        params: list[object] = []
        if endpoint_id is not None:
            clauses.append("endpoint_id = ?")
            params.append(endpoint_id)
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        self._cur.execute(
            self._sql(
                f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries{where} ORDER BY id LIMIT ?"
            ),
            (*params, limit),
        )
        return [_delivery(r) for r in self._cur.fetchall()]

    def claim_webhook_deliveries(
        self, owner: str, now_us: int, lease_until_us: int, limit: int
    ) -> list[DeliveryRow]:
        """Lease up to ``limit`` due deliveries to ``owner``, counting an attempt on each."""
        guard = (
            "state = 'pending' AND next_attempt_at_us <= ?"
            " AND (lease_expires_at_us IS NULL OR lease_expires_at_us <= ?)"
        )
        lock = " FOR UPDATE SKIP LOCKED" if self._webhooks_on_postgres() else ""
        self._cur.execute(
            self._sql(
                "UPDATE webhook_deliveries SET lease_owner = ?, lease_expires_at_us = ?,"
                " attempts = attempts + 1"
                f" WHERE id IN (SELECT id FROM webhook_deliveries WHERE {guard}"
                f" ORDER BY next_attempt_at_us, id LIMIT ?{lock})"
                f" AND {guard}"
                f" RETURNING {DELIVERY_COLUMNS}"
            ),
            (owner, lease_until_us, now_us, now_us, limit, now_us, now_us),
        )
        return sorted((_delivery(r) for r in self._cur.fetchall()), key=lambda d: d.id)

    def finish_webhook_delivery(
        self,
        delivery_id: int,
        owner: str,
        state: str,
        next_attempt_at_us: int,
        status_code: int | None,
        now_us: int,
    ) -> bool:
        """Record an attempt's outcome; False if ``owner`` no longer holds the lease."""
        self._cur.execute(
            self._sql(
                "UPDATE webhook_deliveries SET state = ?, next_attempt_at_us = ?, last_status = ?,"
                " lease_owner = NULL, lease_expires_at_us = NULL,"
                " finished_at_us = CASE WHEN ? = 'pending' THEN NULL ELSE ? END"
                " WHERE id = ? AND state = 'pending' AND lease_owner = ?"
            ),
            (state, next_attempt_at_us, status_code, state, now_us, delivery_id, owner),
        )
        return self._cur.rowcount == 1

    def replay_webhook_delivery(self, delivery_id: int, now_us: int) -> bool:
        """Send a finished delivery again now (manual replay); False if it is still pending."""
        self._cur.execute(
            self._sql(
                "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at_us = ?,"
                " finished_at_us = NULL WHERE id = ? AND state <> 'pending'"
            ),
            (now_us, delivery_id),
        )
        return self._cur.rowcount == 1

    def insert_webhook_attempt(
        self,
        delivery_id: int,
        attempt: int,
        status_code: int | None,
        latency_us: int,
        error: str,
        now_us: int,
    ) -> None:
        self._cur.execute(
            self._sql(
                "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_us,"
                " error, attempted_at_us) VALUES (?,?,?,?,?,?)"
            ),
            (delivery_id, attempt, status_code, latency_us, error, now_us),
        )

    def list_webhook_attempts(self, delivery_id: int) -> list[AttemptRow]:
        self._cur.execute(
            self._sql(
                f"SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = ?"
                " ORDER BY attempt, id"
            ),
            (delivery_id,),
        )
        return [_attempt(r) for r in self._cur.fetchall()]
