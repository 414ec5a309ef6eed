"""``/v1/webhook-endpoints`` and ``/v1/events``: a merchant's endpoints, its outbox, the log.

An endpoint's URL passes the SSRF check (:mod:`micropay.webhooks.ssrf`) when
it is registered; the dispatcher checks it again before every attempt. The
signing secret is shown once, when made (create, rotate): a replay of the
same request answers ``secret: null``. Deleting an endpoint deletes its
delivery log too; disabling keeps it (and cancels pending deliveries when the
dispatcher reaches them).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from micropay.api import schemas_webhooks as w
from micropay.api.errors import ApiError
from micropay.api.routes import IdemKey, Limit, Secret
from micropay.api.routes_common import ERRORS, dump, execute, idempotent, numeric_id, query
from micropay.api.runtime import Principal, Runtime, page_limit_default
from micropay.store.webhooks_sql import DeliveryRow, EndpointRow, EventRow
from micropay.webhooks import EndpointRefusal, UrlRefusal, Webhooks, webhooks_tx
from micropay.webhooks.signing import new_secret

EndpointPath = Annotated[str, Path(pattern=w.EndpointId)]
DeliveryPath = Annotated[str, Path(pattern=w.DeliveryId)]
_URL_SHAPE = (UrlRefusal.url_invalid, UrlRefusal.scheme_not_allowed, UrlRefusal.credentials_in_url)
_REFUSALS = {
    EndpointRefusal.url_refused: "url_refused",
    EndpointRefusal.events_invalid: "events_invalid",
    EndpointRefusal.too_many_endpoints: "too_many_endpoints",
    EndpointRefusal.not_found: "not_found",
}


def _endpoint_out(e: EndpointRow) -> w.WebhookEndpointOut:
    return w.WebhookEndpointOut(
        id=f"we_{e.id}",
        url=e.url,
        events=e.events.split(),
        mode="live" if e.live else "test",
        enabled=e.enabled,
        disabled_reason=e.disabled_reason,
        created_at_us=e.created_at_us,
        updated_at_us=e.updated_at_us,
    )


def _event_out(e: EventRow) -> w.EventOut:
    return w.EventOut(
        id=e.id, type=e.type, created_at_us=e.created_at_us, payload=json.loads(e.payload)
    )


def _delivery_out(tx: Any, d: DeliveryRow) -> w.DeliveryOut:
    return w.DeliveryOut(
        id=f"whd_{d.id}",
        event=d.event_id,
        endpoint=f"we_{d.endpoint_id}",
        state=d.state,
        attempts=d.attempts,
        next_attempt_at_us=d.next_attempt_at_us,
        last_status=d.last_status,
        created_at_us=d.created_at_us,
        finished_at_us=d.finished_at_us,
        log=[
            w.DeliveryAttemptOut(
                attempt=a.attempt,
                status_code=a.status_code,
                latency_us=a.latency_us,
                error=a.error,
                attempted_at_us=a.attempted_at_us,
            )
            for a in webhooks_tx(tx).list_webhook_attempts(d.id)
        ],
    )


def own_endpoint(tx: Any, p: Principal, endpoint_id: str) -> EndpointRow:
    found = webhooks_tx(tx).get_webhook_endpoint(numeric_id(endpoint_id, "we_"))
    if found is None or found.merchant_id != p.merchant_id:
        raise ApiError("not_found", "webhook endpoint not found")
    return found


def own_delivery(tx: Any, p: Principal, endpoint_id: str, delivery_id: str) -> DeliveryRow:
    endpoint = own_endpoint(tx, p, endpoint_id)
    found = webhooks_tx(tx).get_webhook_delivery(numeric_id(delivery_id, "whd_"))
    if found is None or found.endpoint_id != endpoint.id:
        raise ApiError("not_found", "delivery not found")
    return found


def own_event(tx: Any, p: Principal, event_id: str) -> EventRow:
    found = webhooks_tx(tx).get_webhook_event(event_id)
    if found is None or found.merchant_id != p.merchant_id:
        raise ApiError("not_found", "event not found")
    return found


def build_webhooks_router(rt: Runtime) -> APIRouter:
    v1 = APIRouter(prefix="/v1", responses=ERRORS)

    def hub() -> Webhooks:
        return Webhooks(
            rt.payments().store,
            clock=rt.config.clock,
            allow_private_in_test=rt.config.webhook_allow_private_in_test,
            resolver=rt.config.webhook_resolver,
        )

    @v1.post(
        "/webhook-endpoints",
        status_code=201,
        response_model=w.WebhookEndpointCreated,
        tags=["webhooks"],
    )
    def create_endpoint(
        body: w.WebhookEndpointCreate, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        """Register an endpoint; its signing secret is shown in this answer only."""

        def run() -> tuple[int, bytes]:
            webhooks = hub()
            live = p.mode == "live"
            checked = webhooks.check(body.url, live)
            if checked.refusal in _URL_SHAPE:
                raise ApiError("url_invalid", checked.message)
            result = webhooks.register_endpoint(
                p.merchant, body.url, live=live, events=tuple(body.events)
            )
            if result.endpoint is None:
                assert result.refusal is not None
                raise ApiError(_REFUSALS[result.refusal], result.message or result.refusal.value)
            out = w.WebhookEndpointCreated(
                endpoint=_endpoint_out(result.endpoint), secret=result.endpoint.secret
            )
            replay.append(dump(out.model_copy(update={"secret": None})))
            return 201, dump(out)

        replay: list[bytes] = []
        return idempotent(rt, p, key, request, body, run, replay_body=lambda: replay[0])

    @v1.get("/webhook-endpoints", response_model=w.WebhookEndpointList, tags=["webhooks"])
    def list_endpoints(p: Secret) -> w.WebhookEndpointList:
        """All of the merchant's endpoints (at most 16: one page)."""
        rows = rt.read(lambda tx: webhooks_tx(tx).list_webhook_endpoints(p.merchant))
        return w.WebhookEndpointList(
            data=[_endpoint_out(e) for e in rows], has_more=False, next_cursor=None
        )

    @v1.get(
        "/webhook-endpoints/{endpoint_id}",
        response_model=w.WebhookEndpointOut,
        tags=["webhooks"],
    )
    def get_endpoint(endpoint_id: EndpointPath, p: Secret) -> w.WebhookEndpointOut:
        return _endpoint_out(rt.read(lambda tx: own_endpoint(tx, p, endpoint_id)))

    def set_enabled(
        endpoint_id: str, enabled: bool, p: Principal, request: Request, key: str
    ) -> Response:
        def run() -> tuple[int, bytes]:
            def change(tx: Any) -> EndpointRow:
                found = own_endpoint(tx, p, endpoint_id)
                sql = webhooks_tx(tx)
                sql.set_webhook_endpoint_enabled(found.id, enabled, "disabled", rt.config.clock())
                changed = sql.get_webhook_endpoint(found.id)
                assert changed is not None
                return changed

            return 200, dump(_endpoint_out(rt.write(change)))

        return idempotent(rt, p, key, request, None, run)

    @v1.post(
        "/webhook-endpoints/{endpoint_id}/disable",
        response_model=w.WebhookEndpointOut,
        tags=["webhooks"],
    )
    def disable_endpoint(
        endpoint_id: EndpointPath, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        """Stop sending: deliveries still pending are cancelled when the dispatcher reaches them."""
        return set_enabled(endpoint_id, False, p, request, key)

    @v1.post(
        "/webhook-endpoints/{endpoint_id}/enable",
        response_model=w.WebhookEndpointOut,
        tags=["webhooks"],
    )
    def enable_endpoint(
        endpoint_id: EndpointPath, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        return set_enabled(endpoint_id, True, p, request, key)

    @v1.delete(
        "/webhook-endpoints/{endpoint_id}",
        response_model=w.WebhookEndpointOut,
        tags=["webhooks"],
    )
    def delete_endpoint(endpoint_id: EndpointPath, p: Secret) -> w.WebhookEndpointOut:
        """Delete an endpoint with its deliveries and their log; answers what was deleted."""

        def delete(tx: Any) -> EndpointRow:
            found = own_endpoint(tx, p, endpoint_id)
            execute(
                tx,
                "DELETE FROM webhook_attempts WHERE delivery_id IN"
                " (SELECT id FROM webhook_deliveries WHERE endpoint_id = ?)",
                (found.id,),
            )
            execute(tx, "DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (found.id,))
            execute(tx, "DELETE FROM webhook_endpoints WHERE id = ?", (found.id,))
            return found

        return _endpoint_out(rt.write(delete))

    @v1.post(
        "/webhook-endpoints/{endpoint_id}/rotate-secret",
        response_model=w.WebhookEndpointCreated,
        tags=["webhooks"],
    )
    def rotate_secret(
        endpoint_id: EndpointPath, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        """A new signing secret, shown in this answer only; the old one stops at once."""

        def run() -> tuple[int, bytes]:
            secret = new_secret()

            def rotate(tx: Any) -> EndpointRow:
                found = own_endpoint(tx, p, endpoint_id)
                execute(
                    tx,
                    "UPDATE webhook_endpoints SET secret = ?, updated_at_us = ? WHERE id = ?",
                    (secret, rt.config.clock(), found.id),
                )
                changed = webhooks_tx(tx).get_webhook_endpoint(found.id)
                assert changed is not None
                return changed

            out = w.WebhookEndpointCreated(endpoint=_endpoint_out(rt.write(rotate)), secret=secret)
            replay.append(dump(out.model_copy(update={"secret": None})))
            return 200, dump(out)

        replay: list[bytes] = []
        return idempotent(rt, p, key, request, None, run, replay_body=lambda: replay[0])

    @v1.get(
        "/webhook-endpoints/{endpoint_id}/deliveries",
        response_model=w.DeliveryList,
        tags=["webhooks"],
    )
    def list_deliveries(
        endpoint_id: EndpointPath,
        p: Secret,
        limit: Limit = page_limit_default,
        cursor: Annotated[str | None, Query(pattern=w.DeliveryId)] = None,
    ) -> w.DeliveryList:
        """The delivery log: each delivery with every attempt (status code, latency, error)."""

        def page(tx: Any) -> w.DeliveryList:
            endpoint = own_endpoint(tx, p, endpoint_id)
            after = own_delivery(tx, p, endpoint_id, cursor).id if cursor else 0
            ids = [
                int(r[0])
                for r in query(
                    tx,
                    "SELECT id FROM webhook_deliveries WHERE endpoint_id = ? AND id > ?"
                    " ORDER BY id LIMIT ?",
                    (endpoint.id, after, limit + 1),
                )
            ]
            sql = webhooks_tx(tx)
            rows = [sql.get_webhook_delivery(i) for i in ids[:limit]]
            data = [_delivery_out(tx, d) for d in rows if d is not None]
            more = len(ids) > limit
            return w.DeliveryList(
                data=data, has_more=more, next_cursor=data[-1].id if more else None
            )

        return rt.read(page)

    @v1.post(
        "/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/replay",
        response_model=w.DeliveryOut,
        tags=["webhooks"],
    )
    def replay_delivery(
        endpoint_id: EndpointPath,
        delivery_id: DeliveryPath,
        p: Secret,
        request: Request,
        key: IdemKey,
    ) -> Response:
        """Send a finished delivery again (same event, same webhook-id); 409 if still pending."""

        def run() -> tuple[int, bytes]:
            def again(tx: Any) -> w.DeliveryOut:
                found = own_delivery(tx, p, endpoint_id, delivery_id)
                sql = webhooks_tx(tx)
                if not sql.replay_webhook_delivery(found.id, rt.config.clock()):
                    raise ApiError("delivery_pending", "this delivery is still being sent")
                changed = sql.get_webhook_delivery(found.id)
                assert changed is not None
                return _delivery_out(tx, changed)

            return 200, dump(rt.write(again))

        return idempotent(rt, p, key, request, None, run)

    # --- events: the merchant's outbox ------------------------------------------------

    @v1.get("/events", response_model=w.EventList, tags=["events"])
    def list_events(
        p: Secret,
        limit: Limit = page_limit_default,
        cursor: Annotated[str | None, Query(pattern=w.EventId)] = None,
        type: Annotated[w.EventType | None, Query()] = None,  # noqa: A002 - the API's name
    ) -> w.EventList:
        """The merchant's events, oldest first; ``next_cursor`` continues after the last."""

        def page(tx: Any) -> w.EventList:
            at_us, after = 0, ""
            if cursor:
                last = own_event(tx, p, cursor)
                at_us, after = last.created_at_us, last.id
            kind = " AND type = ?" if type else ""
            rows = query(
                tx,
                "SELECT id FROM webhook_events WHERE merchant_id = ?"
                " AND (created_at_us > ? OR (created_at_us = ? AND id > ?))"
                f"{kind} ORDER BY created_at_us, id LIMIT ?",
                (p.merchant, at_us, at_us, after, *([type] if type else []), limit + 1),
            )
            sql = webhooks_tx(tx)
            events = [sql.get_webhook_event(str(r[0])) for r in rows[:limit]]
            data = [_event_out(e) for e in events if e is not None]
            more = len(rows) > limit
            return w.EventList(data=data, has_more=more, next_cursor=data[-1].id if more else None)

        return rt.read(page)

    @v1.get("/events/{event_id}", response_model=w.EventOut, tags=["events"])
    def get_event(event_id: Annotated[str, Path(pattern=w.EventId)], p: Secret) -> w.EventOut:
        return _event_out(rt.read(lambda tx: own_event(tx, p, event_id)))

    return v1
