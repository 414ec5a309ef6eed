"""Endpoints under ``/v1``: each converts its request class to core calls and back, explicitly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from micropay.api import keys as api_keys
from micropay.api import routes_common as common
from micropay.api import schemas as s
from micropay.api.errors import STATUS_HTTP, ApiError
from micropay.api.routes_common import domain_key, own_customer
from micropay.api.routes_common import dump as _dump
from micropay.api.routes_common import fingerprint as _fingerprint
from micropay.api.routes_common import response as _response
from micropay.api.runtime import Principal, Runtime, api_tx, page_limit_default, page_limit_max
from micropay.core.money import format_amount
from micropay.payments.models import Customer, FundingSource, Item, Merchant, PurchaseStatus
from micropay.payments.records import PurchaseRecord
from micropay.service.gift_cards import GiftCards
from micropay.service.payments import PaymentsInputError, Receipt
from micropay.service.processor_events import EventStatus, ProcessorEvents
from micropay.store.api_sql import ApiKeyRow

_bearer = HTTPBearer(auto_error=False, description="An API key: mp_sk_..., mp_pk_... or mp_op_...")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorEnvelope, "description": "refused"}
    for code in (400, 401, 402, 403, 404, 409, 413, 422, 429)
}
IdemKey = Annotated[
    str,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"),
]
Limit = Annotated[int, Query(ge=1, le=page_limit_max)]


def _shown(created: s.KeyCreated) -> s.KeyCreated:
    """The answer kept for replays: a key is shown once, so its token is not kept."""
    return created.model_copy(update={"token": None})


def _key_out(row: ApiKeyRow) -> s.KeyOut:
    return s.KeyOut(
        id=row.lookup,
        kind=row.kind,
        mode=row.mode,
        created_at_us=row.created_at_us,
        revoked=row.revoked_at_us is not None,
    )


def _customer_out(c: Customer) -> s.CustomerOut:
    return s.CustomerOut(
        id=c.public_id,
        currency=c.currency,
        tab_limit_micros=c.tab_limit_micros,
        tab_limit=format_amount(c.tab_limit_micros, c.currency),
        tab_state=c.tab_state.value,
        has_payment_method=bool(c.payment_method_token),
    )


def _item_out(i: Item) -> s.ItemOut:
    return s.ItemOut(
        item_ref=i.item_ref,
        name=i.name,
        price_micros=i.price_micros,
        price=format_amount(i.price_micros, i.currency),
        currency=i.currency,
        access_period_s=i.access_period_s,
        consumable=i.consumable,
    )


def _purchase_out(p: PurchaseRecord, customer: str, fee_micros: int, ends_us: int) -> s.PurchaseOut:
    return s.PurchaseOut(
        id=f"pur_{p.id}",
        status=p.status,
        customer=customer,
        item=p.item_ref,
        funding=p.funding.value,
        price_micros=p.price_micros,
        price=format_amount(p.price_micros, p.currency),
        currency=p.currency,
        fee_micros=fee_micros,
        entitlement_ends_at_us=ends_us,
        message="",
    )


def _receipt_out(r: Receipt, customer: str, item: str) -> s.PurchaseOut:
    currency = r.currency or "USD"
    return s.PurchaseOut(
        id=f"pur_{r.purchase_id}" if r.purchase_id else None,
        status=r.status.value,
        customer=customer,
        item=item,
        funding=r.funding.value if r.funding else None,
        price_micros=r.price_micros,
        price=format_amount(r.price_micros, currency),
        currency=r.currency,
        fee_micros=r.fee_micros,
        entitlement_ends_at_us=r.entitlement_ends_at_us,
        message=r.message,
    )


async def principal(
    creds: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    request: Request,
) -> Principal:
    header = request.headers.get("authorization") if creds is not None else None
    runtime: Runtime = request.app.state.runtime
    # A key seen within the last second: no database read, no threadpool hop.
    cached = runtime.authenticate_cached(header)
    if cached is not None:
        return cached
    return await run_in_threadpool(runtime.authenticate, header)


# The guards are pure checks: ``async`` keeps them on the event loop instead of a
# round trip through the threadpool each.
async def merchant_key(p: Annotated[Principal, Depends(principal)]) -> Principal:
    if p.kind != "secret":
        raise ApiError("key_scope_insufficient", "this endpoint needs a secret key")
    return p


async def any_merchant_key(p: Annotated[Principal, Depends(principal)]) -> Principal:
    if p.kind not in ("secret", "publishable"):
        raise ApiError("key_scope_insufficient", "this endpoint needs a merchant key")
    return p


async def operator_key(p: Annotated[Principal, Depends(principal)]) -> Principal:
    if p.kind != "operator":
        raise ApiError("key_scope_insufficient", "this endpoint needs the operator key")
    return p


Secret = Annotated[Principal, Depends(merchant_key)]
AnyKey = Annotated[Principal, Depends(any_merchant_key)]
Operator = Annotated[Principal, Depends(operator_key)]


def build_router(rt: Runtime) -> APIRouter:
    router = APIRouter()
    v1 = APIRouter(prefix="/v1", responses=_ERRORS)

    def idempotent(
        p: Principal,
        key: str,
        request: Request,
        body: BaseModel | None,
        handler: Callable[[], tuple[int, bytes]],
        *,
        replay_body: Callable[[], bytes] | None = None,
    ) -> Response:
        return common.idempotent(rt, p, key, request, body, handler, replay_body=replay_body)

    def own_purchase(tx: Any, p: Principal, purchase_id: str) -> PurchaseRecord:
        purchase = tx.get_purchase(int(purchase_id.removeprefix("pur_")))
        if purchase is None or purchase.merchant_id != p.merchant_id:
            raise ApiError("not_found", "purchase not found")
        return cast(PurchaseRecord, purchase)

    # --- health -------------------------------------------------------------

    @router.get("/healthz", response_model=s.Health, tags=["ops"])
    def healthz() -> s.Health:
        return s.Health(status="ok")

    @router.get(
        "/readyz", response_model=s.Health, tags=["ops"], responses={503: {"model": s.Health}}
    )
    def readyz() -> Response:
        try:
            rt.read(lambda tx: api_tx(tx).api_merchant_mode(0))
        except Exception:
            return _response(503, _dump(s.Health(status="unavailable")))
        return _response(200, _dump(s.Health(status="ready")))

    # --- operator: merchants ---------------------------------------------------

    @v1.post("/merchants", status_code=201, response_model=s.MerchantCreated, tags=["operator"])
    def create_merchant(
        body: s.MerchantCreate, p: Operator, request: Request, key: IdemKey
    ) -> Response:
        served = rt.config.processor_mode
        if served is not None and body.mode != served:
            # One deployment per mode: its worker charges every merchant it holds.
            raise ApiError(
                "mode_mismatch",
                f"this server's processor is in {served} mode: it creates {served} merchants only",
            )

        def run() -> tuple[int, bytes]:
            payments = rt.payments()
            new = api_keys.generate("secret", body.mode)
            rows: list[ApiKeyRow] = []

            def record(tx: Any, merchant: Merchant) -> None:
                now_us = payments.clock()
                row = ApiKeyRow(
                    new.parsed.lookup,
                    new.secret_sha256,
                    "secret",
                    body.mode,
                    merchant.id,
                    now_us,
                    None,
                )
                api_tx(tx).insert_api_merchant(merchant.id, body.mode, now_us)
                api_tx(tx).insert_api_key(row)
                rows.append(row)

            try:
                merchant = payments.create_merchant(
                    body.name,
                    body.currency,
                    funding_policy=tuple(FundingSource(x) for x in body.funding_policy),
                    also=record,
                )
            except PaymentsInputError as error:
                raise ApiError("validation_failed", str(error)) from None
            out = s.MerchantCreated(
                merchant=s.MerchantOut(
                    id=merchant.public_id,
                    name=merchant.name,
                    currency=merchant.currency,
                    mode=body.mode,
                    funding_policy=[f.value for f in merchant.funding_policy],
                ),
                secret_key=s.KeyCreated(key=_key_out(rows[-1]), token=new.token),
            )
            replay.append(_dump(out.model_copy(update={"secret_key": _shown(out.secret_key)})))
            return 201, _dump(out)

        replay: list[bytes] = []
        return idempotent(p, key, request, body, run, replay_body=lambda: replay[0])

    # --- keys ------------------------------------------------------------------

    @v1.post("/keys", status_code=201, response_model=s.KeyCreated, tags=["keys"])
    def create_key(body: s.KeyCreate, p: Secret, request: Request, key: IdemKey) -> Response:
        def run() -> tuple[int, bytes]:
            new = api_keys.generate(body.kind, p.mode)
            row = ApiKeyRow(
                new.parsed.lookup,
                new.secret_sha256,
                body.kind,
                p.mode,
                p.merchant_id,
                rt.config.clock(),
                None,
            )
            rt.write(lambda tx: api_tx(tx).insert_api_key(row))
            created = s.KeyCreated(key=_key_out(row), token=new.token)
            replay.append(_dump(_shown(created)))
            return 201, _dump(created)

        replay: list[bytes] = []
        return idempotent(p, key, request, body, run, replay_body=lambda: replay[0])

    @v1.get("/keys", response_model=s.KeyList, tags=["keys"])
    def list_keys(p: Secret) -> s.KeyList:
        rows = rt.read(lambda tx: api_tx(tx).list_api_keys(p.merchant_id))
        return s.KeyList(data=[_key_out(r) for r in rows])

    @v1.post("/keys/{key_id}/revoke", response_model=s.KeyOut, tags=["keys"])
    def revoke_key(
        key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
        p: Secret,
        request: Request,
        key: IdemKey,
    ) -> Response:
        def run() -> tuple[int, bytes]:
            def revoke(tx: Any) -> ApiKeyRow:
                sql = api_tx(tx)
                row = sql.get_api_key(key_id)
                if row is None or row.merchant_id != p.merchant_id:
                    raise ApiError("not_found", "key not found")
                sql.revoke_api_key(key_id, rt.config.clock())
                found = sql.get_api_key(key_id)
                assert found is not None
                return found

            revoked = rt.write(revoke)
            rt.forget_keys()  # after the commit: a request in between must not re-cache it
            return 200, _dump(_key_out(revoked))

        return idempotent(p, key, request, None, run)

    # --- customers -------------------------------------------------------------

    @v1.post("/customers", status_code=201, response_model=s.CustomerOut, tags=["customers"])
    def create_customer(
        body: s.CustomerCreate, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        def run() -> tuple[int, bytes]:
            payments = rt.payments()
            merchant = rt.read(lambda tx: tx.get_merchant(p.merchant_id))
            customer = payments.create_customer(
                merchant.currency,
                processor_customer_token=body.processor_customer_token,
                payment_method_token=body.payment_method_token,
                also=lambda tx, c: api_tx(tx).insert_api_customer(
                    c.id, p.merchant, payments.clock()
                ),
            )
            return 201, _dump(_customer_out(customer))

        return idempotent(p, key, request, body, run)

    @v1.get("/customers/{customer_id}", response_model=s.CustomerOut, tags=["customers"])
    def get_customer(
        customer_id: Annotated[str, Path(pattern=r"^cus_[0-9a-f]{16}$")], p: Secret
    ) -> s.CustomerOut:
        return _customer_out(rt.read(lambda tx: own_customer(tx, p, customer_id)))

    @v1.get("/customers", response_model=s.CustomerList, tags=["customers"])
    def list_customers(
        p: Secret,
        limit: Limit = page_limit_default,
        cursor: Annotated[str | None, Query(pattern=r"^cus_[0-9a-f]{16}$")] = None,
    ) -> s.CustomerList:
        def page(tx: Any) -> s.CustomerList:
            after = own_customer(tx, p, cursor).id if cursor else 0
            ids = api_tx(tx).list_api_customers(p.merchant, after, limit + 1)
            rows = [tx.find_customer(i) for i in ids[:limit]]
            data = [_customer_out(c) for c in rows if c is not None]
            more = len(ids) > limit
            return s.CustomerList(
                data=data, has_more=more, next_cursor=data[-1].id if more else None
            )

        return rt.read(page)

    # --- items -------------------------------------------------------------------

    @v1.put("/items/{item_ref}", response_model=s.ItemOut, tags=["items"])
    def put_item(
        item_ref: Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$")],
        body: s.ItemPut,
        p: Secret,
    ) -> s.ItemOut:
        try:
            item = rt.payments().set_item(
                p.merchant,
                item_ref,
                body.name,
                body.price_micros,
                access_period_s=body.access_period_s,
                consumable=body.consumable,
            )
        except PaymentsInputError as error:
            raise ApiError("validation_failed", str(error)) from None
        return _item_out(item)

    @v1.get("/items/{item_ref}", response_model=s.ItemOut, tags=["items"])
    def get_item(
        item_ref: Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$")], p: AnyKey
    ) -> s.ItemOut:
        item = rt.read(lambda tx: tx.get_item(p.merchant_id, item_ref))
        if item is None:
            raise ApiError.from_status(PurchaseStatus.item_not_found)
        return _item_out(item)

    # --- money ---------------------------------------------------------------------

    @v1.post(
        "/customers/{customer_id}/top-ups",
        status_code=201,
        response_model=s.TopUpOut,
        tags=["wallets"],
    )
    def top_up(
        customer_id: Annotated[str, Path(pattern=r"^cus_[0-9a-f]{16}$")],
        body: s.TopUpCreate,
        p: Secret,
        request: Request,
        key: IdemKey,
    ) -> Response:
        def run() -> tuple[int, bytes]:
            customer = rt.read(lambda tx: own_customer(tx, p, customer_id))
            receipt = rt.payments().top_up(customer.id, body.amount_micros, domain_key(key))
            http, _ = STATUS_HTTP[receipt.status]
            if http >= 400:
                raise ApiError.from_status(receipt.status)
            out = s.TopUpOut(
                id=f"chg_{receipt.charge_id}",
                status=receipt.status.value,
                customer=customer_id,
                amount_micros=receipt.amount_micros,
                amount=format_amount(receipt.amount_micros, customer.currency),
                currency=customer.currency,
            )
            return http, _dump(out)

        return idempotent(p, key, request, body, run)

    @v1.post("/purchases", status_code=201, response_model=s.PurchaseOut, tags=["purchases"])
    async def purchase(
        body: s.PurchaseCreate, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        def answer(receipt: Receipt) -> tuple[int, bytes]:
            http, _ = STATUS_HTTP[receipt.status]
            if http >= 400:
                raise ApiError.from_status(receipt.status, receipt.message)
            return http, _dump(_receipt_out(receipt, body.customer, body.item))

        def _after_purchase(customer_id: int, receipt: Receipt) -> None:
            rt.payments().after_purchase(customer_id, receipt)

        # Paid from the wallet, the tab or store credit: the key's row, the
        # purchase and the stored answer commit together, in one transaction,
        # shared with the purchases queued at the same time (group commit).
        done: list[tuple[Customer, Receipt]] = []

        def in_one_tx(tx: Any) -> tuple[int, bytes] | None:
            done.clear()  # a retried transaction starts over
            customer = own_customer(tx, p, body.customer)
            receipt = rt.payments().purchase_in(
                tx,
                p.merchant,
                customer.id,
                body.item,
                key,
                price_micros=body.price_micros,
                currency=body.currency,
            )
            if receipt is None:
                return None
            done.append((customer, receipt))
            return answer(receipt)

        request_id = str(getattr(request.state, "request_id", ""))
        fast = await rt.idempotent_batched(
            p, key, _fingerprint(request.url.path, body), in_one_tx, request_id
        )
        if fast is not None:
            for customer, receipt in done:
                if customer.auto_reload_amount_micros:  # as read in the purchase's transaction
                    # A processor call, on a worker thread (with that thread's store).
                    await run_in_threadpool(_after_purchase, customer.id, receipt)
            return _response(*fast)

        # A card charge, a tab settlement or an auto-reload: the processor is
        # called outside any transaction, under the key's in-progress row.
        def run() -> tuple[int, bytes]:
            customer = rt.read(lambda tx: own_customer(tx, p, body.customer))
            return answer(
                rt.payments().purchase(
                    p.merchant,
                    customer.id,
                    body.item,
                    key,
                    price_micros=body.price_micros,
                    currency=body.currency,
                )
            )

        return await run_in_threadpool(idempotent, p, key, request, body, run)

    def purchase_view(tx: Any, p: Principal, purchase: PurchaseRecord) -> s.PurchaseOut:
        customer = tx.get_customer(purchase.customer_id)
        charge = tx.get_charge(purchase.charge_id) if purchase.charge_id else None
        ent = tx.active_entitlement(
            p.merchant_id, purchase.customer_id, purchase.item_ref, rt.config.clock()
        )
        ends = ent.ends_at_us if ent is not None and ent.purchase_id == purchase.id else 0
        return _purchase_out(
            purchase,
            customer.public_id if customer else "",
            charge.fee_micros if charge else 0,
            ends,
        )

    @v1.get("/purchases/{purchase_id}", response_model=s.PurchaseOut, tags=["purchases"])
    def get_purchase(
        purchase_id: Annotated[str, Path(pattern=r"^pur_[1-9][0-9]{0,17}$")], p: Secret
    ) -> s.PurchaseOut:
        return rt.read(lambda tx: purchase_view(tx, p, own_purchase(tx, p, purchase_id)))

    @v1.get("/purchases", response_model=s.PurchaseList, tags=["purchases"])
    def list_purchases(
        p: Secret,
        limit: Limit = page_limit_default,
        cursor: Annotated[str | None, Query(pattern=r"^pur_[1-9][0-9]{0,17}$")] = None,
    ) -> s.PurchaseList:
        def page(tx: Any) -> s.PurchaseList:
            after = own_purchase(tx, p, cursor).id if cursor else 0
            ids = api_tx(tx).list_purchases(p.merchant, after, limit + 1)
            data = []
            for purchase_id in ids[:limit]:
                found = tx.get_purchase(purchase_id)
                if found is not None:
                    data.append(purchase_view(tx, p, found))
            more = len(ids) > limit
            return s.PurchaseList(
                data=data, has_more=more, next_cursor=data[-1].id if more else None
            )

        return rt.read(page)

    @v1.post(
        "/purchases/{purchase_id}/refunds",
        status_code=201,
        response_model=s.RefundOut,
        tags=["refunds"],
    )
    def refund(
        purchase_id: Annotated[str, Path(pattern=r"^pur_[1-9][0-9]{0,17}$")],
        body: s.RefundCreate,
        p: Secret,
        request: Request,
        key: IdemKey,
    ) -> Response:
        def run() -> tuple[int, bytes]:
            purchase = rt.read(lambda tx: own_purchase(tx, p, purchase_id))
            receipt = rt.payments().refunds.refund(
                purchase.id, body.amount_micros, domain_key(key), destination=body.destination
            )
            http, _ = STATUS_HTTP[receipt.status]
            if http >= 400:
                raise ApiError.from_status(receipt.status)
            out = s.RefundOut(
                id=f"ref_{receipt.refund_id}",
                status=receipt.status.value,
                purchase=purchase_id,
                amount_micros=receipt.amount_micros,
                amount=format_amount(receipt.amount_micros, purchase.currency),
                destination=receipt.destination,
            )
            return http, _dump(out)

        return idempotent(p, key, request, body, run)

    # --- store credit: issue, and redeem at a point of sale ------------------------

    @v1.post(
        "/store-credit",
        status_code=201,
        response_model=s.StoreCreditIssued,
        tags=["store credit"],
    )
    def issue_store_credit(
        body: s.StoreCreditIssue, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        """Issue merchant store credit, funded from the merchant's earnings.

        The codes are in this answer only: they are stored hashed, and a replay
        of the same request answers without them.
        """

        def run() -> tuple[int, bytes]:
            payments = rt.payments()
            merchant = rt.read(lambda tx: tx.get_merchant(p.merchant))
            batch = GiftCards(payments).issue_store_credit(
                p.merchant, body.count, body.value_micros, domain_key(key)
            )
            http, _ = STATUS_HTTP[batch.status]
            if http >= 400:
                raise ApiError.from_status(batch.status)
            out = s.StoreCreditIssued(
                batch=f"scb_{batch.batch_id}",
                status=batch.status.value,
                value_micros=body.value_micros,
                value=format_amount(body.value_micros, merchant.currency),
                currency=merchant.currency,
                codes=list(batch.codes),
            )
            replay.append(_dump(out.model_copy(update={"codes": []})))
            return http, _dump(out)

        replay: list[bytes] = []
        return idempotent(p, key, request, body, run, replay_body=lambda: replay[0])

    @v1.post(
        "/store-credit/redemptions",
        status_code=201,
        response_model=s.PosRedeemed,
        tags=["store credit"],
    )
    def redeem_at_point_of_sale(
        body: s.PosRedeem, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        """A till spends part or all of a code (typed or scanned from a QR) at this merchant.

        Store credit is refused at any merchant but its issuer (403).
        """

        def run() -> tuple[int, bytes]:
            payments = rt.payments()
            merchant = rt.read(lambda tx: tx.get_merchant(p.merchant))
            redemption = GiftCards(payments).redeem_at_pos(
                p.merchant, body.code, body.amount_micros, domain_key(key)
            )
            http, _ = STATUS_HTTP[redemption.status]
            if http >= 400:
                raise ApiError.from_status(redemption.status)
            out = s.PosRedeemed(
                status=redemption.status.value,
                amount_micros=redemption.amount_micros,
                amount=format_amount(redemption.amount_micros, merchant.currency),
                remaining_micros=redemption.remaining_micros,
                remaining=format_amount(redemption.remaining_micros, merchant.currency),
                replayed=redemption.replayed,
            )
            return http, _dump(out)

        return idempotent(p, key, request, body, run)

    # --- entitlements ----------------------------------------------------------------

    @v1.get("/entitlements", response_model=s.EntitlementOut, tags=["entitlements"])
    def entitlement(
        p: AnyKey,
        customer: Annotated[str, Query(pattern=r"^cus_[0-9a-f]{16}$")],
        item: Annotated[str, Query(pattern=r"^[A-Za-z0-9._:-]{1,128}$")],
    ) -> s.EntitlementOut:
        found = rt.read(lambda tx: own_customer(tx, p, customer))
        token = rt.payments().entitlement_token(p.merchant, found.id, item)
        return s.EntitlementOut(customer=customer, item=item, active=token is not None, token=token)

    @v1.get("/entitlement-keys", response_model=s.EntitlementKeys, tags=["entitlements"])
    def entitlement_keys(p: AnyKey) -> s.EntitlementKeys:
        signer = rt.config.signer
        return s.EntitlementKeys(
            keys=[
                s.EntitlementKey(
                    kid=signer.key_id, alg="EdDSA", public_key_pem=signer.public_key_pem()
                )
            ]
        )

    # --- processor events (webhooks in) -----------------------------------------

    @v1.post(
        "/processor-events",
        response_model=s.ProcessorEventOut,
        tags=["processor"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def processor_event(
        request: Request,
        stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
    ) -> Response:
        """A signed event from the card processor (Stripe's webhook format).

        Authenticated by the processor's signature, not an API key: a missing,
        wrong, stale or future-dated signature answers 401 and changes nothing.
        An event for a charge not yet known here answers 409, so the processor
        delivers it again later. Each event applies once; redeliveries replay.
        """
        payload = await request.body()
        if not stripe_signature:
            raise ApiError("event_signature_invalid", "the Stripe-Signature header is missing")
        signature = stripe_signature
        outcome = await run_in_threadpool(
            lambda: ProcessorEvents(rt.payments()).handle(
                payload, signature, rt.payments().clock() // 1_000_000
            )
        )
        if outcome.status is EventStatus.rejected:
            raise ApiError("event_signature_invalid", "the event could not be verified")
        if outcome.status is EventStatus.deferred:
            raise ApiError("event_deferred", "the event refers to a charge not known yet")
        return _response(
            200,
            _dump(
                s.ProcessorEventOut(
                    event_id=outcome.event_id,
                    kind=outcome.kind,
                    status=outcome.status.value,
                    effect=outcome.effect.value,
                    replayed=outcome.replayed,
                )
            ),
        )

    router.include_router(v1)
    return router
