"""Payees, their balances and payouts, platform fees (operator key), item splits (merchant key).

Payees are the platform's: a creator may be paid by several merchants, so
payees, their balances and payouts are read and created with the operator
key only. A merchant names payees (by id) in the split of its own items;
another merchant's item is its own namesake, like ``PUT /v1/items``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from micropay.api import schemas_payouts as po
from micropay.api.errors import ApiError
from micropay.api.routes import IdemKey, Limit, Operator, Secret
from micropay.api.routes_common import ERRORS, dump, idempotent, numeric_id, query
from micropay.api.runtime import Runtime, page_limit_default
from micropay.core.money import format_amount
from micropay.payments.models import PurchaseStatus
from micropay.payouts.plans import Bucket, Payee, PayoutRecord, Schedule
from micropay.payouts.splits import PlatformFee, Share
from micropay.service.payouts import Payouts, PayoutsInputError

PayeePath = Annotated[str, Path(pattern=po.PayeeId)]
MerchantPath = Annotated[str, Path(pattern=r"^mer_[0-9a-f]{16}$")]
ItemPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


def _payee_out(p: Payee) -> po.PayeeOut:
    return po.PayeeOut(
        id=p.public_id,
        name=p.name,
        currency=p.currency,
        verified=p.verified,
        schedule=p.schedule.value,
        threshold_micros=p.threshold_micros,
        hold_s=p.hold_s,
    )


def _payout_out(r: PayoutRecord, payee: str) -> po.PayoutOut:
    return po.PayoutOut(
        id=f"po_{r.id}",
        payee=payee,
        purpose=r.purpose,
        period_key=r.period_key,
        amount_micros=r.amount_micros,
        amount=format_amount(r.amount_micros, r.currency),
        currency=r.currency,
        status=r.status,
        created_at_us=r.created_at_us,
        updated_at_us=r.updated_at_us,
    )


def find_payee(tx: Any, public_id: str) -> Payee:
    rows = query(tx, "SELECT id FROM payees WHERE public_id = ?", (public_id,))
    payee = tx.get_payee(int(rows[0][0])) if rows else None
    if payee is None:
        raise ApiError("not_found", "payee not found")
    assert isinstance(payee, Payee)
    return payee


def build_payouts_router(rt: Runtime) -> APIRouter:
    v1 = APIRouter(prefix="/v1", responses=ERRORS)

    @v1.post("/payees", status_code=201, response_model=po.PayeeOut, tags=["payouts"])
    def create_payee(body: po.PayeeCreate, p: Operator, request: Request, key: IdemKey) -> Response:
        """A payee (unverified: verify the bank account before any payout is made)."""

        def run() -> tuple[int, bytes]:
            try:
                payee = Payouts(rt.payments()).create_payee(
                    body.name,
                    body.currency,
                    body.destination_token,
                    schedule=Schedule(body.schedule),
                    threshold_micros=body.threshold_micros,
                    hold_s=body.hold_s,
                )
            except PayoutsInputError as error:
                raise ApiError("validation_failed", str(error)) from None
            return 201, dump(_payee_out(payee))

        return idempotent(rt, p, key, request, body, run)

    @v1.get("/payees/{payee_id}", response_model=po.PayeeOut, tags=["payouts"])
    def get_payee(payee_id: PayeePath, p: Operator) -> po.PayeeOut:
        return _payee_out(rt.read(lambda tx: find_payee(tx, payee_id)))

    @v1.get("/payees/{payee_id}/balances", response_model=po.BalancesOut, tags=["payouts"])
    def payee_balances(payee_id: PayeePath, p: Operator) -> po.BalancesOut:
        payee = rt.read(lambda tx: find_payee(tx, payee_id))
        balances = Payouts(rt.payments()).balances(payee.id)
        return po.BalancesOut(
            payee=payee.public_id,
            currency=payee.currency,
            pending_micros=balances[Bucket.pending],
            available_micros=balances[Bucket.available],
            deposits_micros=balances[Bucket.deposits],
        )

    @v1.get("/payees/{payee_id}/payouts", response_model=po.PayoutList, tags=["payouts"])
    def list_payouts(
        payee_id: PayeePath,
        p: Operator,
        limit: Limit = page_limit_default,
        cursor: Annotated[str | None, Query(pattern=po.PayoutId)] = None,
    ) -> po.PayoutList:
        """The payee's payouts (earnings and micro-deposits), oldest first."""

        def page(tx: Any) -> po.PayoutList:
            payee = find_payee(tx, payee_id)
            after = 0
            if cursor:
                found = tx.get_payout(numeric_id(cursor, "po_"))
                if found is None or found.payee_id != payee.id:
                    raise ApiError("not_found", "payout not found")
                after = found.id
            ids = [
                int(r[0])
                for r in query(
                    tx,
                    "SELECT id FROM payouts WHERE payee_id = ? AND id > ? ORDER BY id LIMIT ?",
                    (payee.id, after, limit + 1),
                )
            ]
            rows = [tx.get_payout(i) for i in ids[:limit]]
            data = [_payout_out(r, payee.public_id) for r in rows if r is not None]
            more = len(ids) > limit
            return po.PayoutList(
                data=data, has_more=more, next_cursor=data[-1].id if more else None
            )

        return rt.read(page)

    # --- platform fees (operator) -----------------------------------------------------------

    def merchant_of(tx: Any, merchant_id: str) -> int:
        merchant = tx.find_merchant(merchant_id)
        if merchant is None:
            raise ApiError.from_status(PurchaseStatus.merchant_not_found)
        return int(merchant.id)

    def fee_view(tx: Any, merchant_id: str) -> po.PlatformFeeOut:
        fee = tx.get_platform_fee(merchant_of(tx, merchant_id)) or PlatformFee()
        return po.PlatformFeeOut(
            merchant=merchant_id, fee_bps=fee.fee_bps, fixed_micros=fee.fixed_micros
        )

    @v1.put(
        "/merchants/{merchant_id}/platform-fee", response_model=po.PlatformFeeOut, tags=["payouts"]
    )
    def put_platform_fee(
        merchant_id: MerchantPath, body: po.PlatformFeePut, p: Operator
    ) -> po.PlatformFeeOut:
        """Set the platform's fee on the merchant's sales (sales already made keep theirs)."""
        internal = rt.read(lambda tx: merchant_of(tx, merchant_id))
        fee = PlatformFee(body.fee_bps, body.fixed_micros)
        try:
            Payouts(rt.payments()).set_platform_fee(internal, fee)
        except PayoutsInputError as error:
            raise ApiError("validation_failed", str(error)) from None
        return rt.read(lambda tx: fee_view(tx, merchant_id))

    @v1.get(
        "/merchants/{merchant_id}/platform-fee", response_model=po.PlatformFeeOut, tags=["payouts"]
    )
    def get_platform_fee(merchant_id: MerchantPath, p: Operator) -> po.PlatformFeeOut:
        return rt.read(lambda tx: fee_view(tx, merchant_id))

    # --- splits: the merchant's items ----------------------------------------------------

    def split_view(tx: Any, merchant_id: int, item_ref: str) -> po.SplitOut:
        if tx.get_item(merchant_id, item_ref) is None:
            raise ApiError.from_status(PurchaseStatus.item_not_found)
        shares = []
        for share in tx.get_split(merchant_id, item_ref):
            payee = tx.get_payee(share.payee_id)
            shares.append(
                po.ShareOut(payee=payee.public_id if payee else "", share_bps=share.share_bps)
            )
        return po.SplitOut(item_ref=item_ref, shares=shares)

    @v1.put("/items/{item_ref}/split", response_model=po.SplitOut, tags=["payouts"])
    def put_split(item_ref: ItemPath, body: po.SplitPut, p: Secret) -> po.SplitOut:
        """Set who shares the item's proceeds after the platform fee (replacing the split
        before; sales already made keep theirs). Each payee must be paid in the merchant's
        currency."""

        def resolve(tx: Any) -> list[Share]:
            if tx.get_item(p.merchant, item_ref) is None:
                raise ApiError.from_status(PurchaseStatus.item_not_found)
            return [Share(find_payee(tx, s.payee).id, s.share_bps) for s in body.shares]

        shares = rt.read(resolve)
        try:
            Payouts(rt.payments()).set_split(p.merchant, item_ref, shares)
        except PayoutsInputError as error:
            raise ApiError("validation_failed", str(error)) from None
        return rt.read(lambda tx: split_view(tx, p.merchant, item_ref))

    @v1.get("/items/{item_ref}/split", response_model=po.SplitOut, tags=["payouts"])
    def get_split(item_ref: ItemPath, p: Secret) -> po.SplitOut:
        """The item's split; no shares: the merchant keeps the proceeds after the fee."""
        return rt.read(lambda tx: split_view(tx, p.merchant, item_ref))

    return v1
