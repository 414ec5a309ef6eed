"""Tabs, tips, subscriptions and usage: ``/v1/customers/{id}/tab``, ``/v1/tips``,
``/v1/plans``, ``/v1/subscriptions``, ``/v1/meters`` and ``/v1/usage-events``.

Every query is scoped to the key's merchant: another merchant's customer,
subscription or usage answers 404; plans and meters are named per merchant.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from micropay.api import schemas_billing as b
from micropay.api.errors import STATUS_HTTP, ApiError
from micropay.api.routes import IdemKey, Limit, Secret
from micropay.api.routes_common import (
    ERRORS,
    domain_key,
    dump,
    idempotent,
    numeric_id,
    own_customer,
    query,
)
from micropay.api.runtime import Principal, Runtime, page_limit_default
from micropay.core.money import format_amount
from micropay.payments import chart
from micropay.payments.billing import (
    Period,
    Plan,
    SubscriptionRecord,
    SubscriptionStatus,
)
from micropay.payments.models import Customer, PurchaseStatus
from micropay.payments.records import ChargeStatus
from micropay.service.billing import Metering, Subscriptions, TipReceipt, Tips
from micropay.service.charges import tab_owed_micros
from micropay.service.payments import PaymentsInputError

CustomerPath = Annotated[str, Path(pattern=r"^cus_[0-9a-f]{16}$")]
PlanPath = Annotated[str, Path(pattern=b.PlanRef)]
MeterPath = Annotated[str, Path(pattern=b.MeterRef)]
SubscriptionPath = Annotated[str, Path(pattern=b.SubscriptionId)]
_USAGE_COLUMNS = (
    "u.id, c.public_id, u.meter, u.quantity, u.unit_price_micros, u.occurred_at_us, u.posting_id"
)


def _usage_out(r: Any) -> b.UsageOut:
    return b.UsageOut(
        id=f"use_{int(r[0])}",
        customer=str(r[1]),
        meter=str(r[2]),
        quantity=int(r[3]),
        unit_price_micros=int(r[4]),
        amount_micros=int(r[3]) * int(r[4]),
        occurred_at_us=int(r[5]),
        billed=r[6] is not None,
    )


def _plan_out(plan: Plan) -> b.PlanOut:
    return b.PlanOut(
        plan_ref=plan.plan_ref,
        name=plan.name,
        period=plan.period.value,
        price_micros=plan.price_micros,
        price=format_amount(plan.price_micros, plan.currency),
        currency=plan.currency,
    )


def _subscription_out(
    sub: SubscriptionRecord, customer: str, funding: str | None = None
) -> b.SubscriptionOut:
    return b.SubscriptionOut(
        id=f"sub_{sub.id}",
        customer=customer,
        plan=sub.plan_ref,
        state=sub.state.value,
        cancel_at_period_end=sub.cancel_at_period_end,
        period=sub.period.value,
        price_micros=sub.price_micros,
        price=format_amount(sub.price_micros, sub.currency),
        currency=sub.currency,
        time_zone=sub.time_zone,
        period_number=sub.period_number,
        period_starts_at_us=sub.period_starts_at_us,
        period_ends_at_us=sub.period_ends_at_us,
        funding=funding,
    )


# Tip refusals without a row in STATUS_HTTP (the others share a purchase's or top-up's).
def tip_error(receipt: TipReceipt) -> ApiError:
    """The API refusal of a refused tip (from the one status table)."""
    return ApiError.from_status(receipt.status, receipt.message)


def own_subscription(tx: Any, p: Principal, subscription_id: str) -> SubscriptionRecord:
    found = tx.get_subscription(numeric_id(subscription_id, "sub_"))
    if found is None or found.merchant_id != p.merchant_id:
        raise ApiError.from_status(SubscriptionStatus.subscription_not_found)
    assert isinstance(found, SubscriptionRecord)
    return found


def build_billing_router(rt: Runtime) -> APIRouter:
    v1 = APIRouter(prefix="/v1", responses=ERRORS)

    # --- tabs -----------------------------------------------------------------------------

    def tab_view(tx: Any, customer: Customer) -> b.TabOut:
        tab_id = chart.tab_account(customer.id, customer.currency)
        account = tx.get_accounts([tab_id]).get(tab_id)
        owed = tab_owed_micros(account) if account is not None else 0
        pending = tx.pending_charge(customer.id, "tab")
        period_us = rt.payments().tab_policy.period_s * 1_000_000
        return b.TabOut(
            customer=customer.public_id,
            currency=customer.currency,
            state=customer.tab_state.value,
            limit_micros=customer.tab_limit_micros,
            limit=format_amount(customer.tab_limit_micros, customer.currency),
            owed_micros=owed,
            owed=format_amount(owed, customer.currency),
            period_started_at_us=customer.tab_opened_at_us,
            period_ends_at_us=customer.tab_opened_at_us + period_us,
            settlement_pending=f"chg_{pending.id}" if pending is not None else None,
        )

    def tab_of(p: Principal, customer_id: str) -> b.TabOut:
        return rt.read(lambda tx: tab_view(tx, own_customer(tx, p, customer_id)))

    @v1.get("/customers/{customer_id}/tab", response_model=b.TabOut, tags=["tabs"])
    def get_tab(customer_id: CustomerPath, p: Secret) -> b.TabOut:
        """The customer's post-pay tab: its limit, what it owes, its state and billing period."""
        return tab_of(p, customer_id)

    @v1.post("/customers/{customer_id}/tab/settle", response_model=b.TabSettled, tags=["tabs"])
    def settle_tab(
        customer_id: CustomerPath, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        """Charge what the tab owes now (whole minor units; a sub-cent rest stays on it).

        201 paid; 202 the processor has not answered yet (the tab's
        ``settlement_pending`` names the charge until it has: read the tab
        later); 200 nothing owed. A declined card answers 402 and freezes the
        tab until paid (dunning retries the charge).
        """

        def run() -> tuple[int, bytes]:
            customer = rt.read(lambda tx: own_customer(tx, p, customer_id))
            payments = rt.payments()
            outcome = payments.charges.settle_tab(customer.id, forced=True)
            if outcome is not None and (
                outcome.status is ChargeStatus.declined or outcome.decline_code
            ):
                # A declined tab charge freezes the tab; dunning retries it later.
                raise ApiError.from_status(
                    PurchaseStatus.charge_declined,
                    "the card was declined: the tab is frozen until paid",
                )
            charge = (
                rt.read(lambda tx: tx.get_charge(outcome.charge_id))
                if outcome is not None
                else None
            )
            amount = charge.amount_micros if charge is not None else 0
            status = outcome.status.value if outcome is not None else "nothing_owed"
            out = b.TabSettled(
                status=status,
                charge=f"chg_{outcome.charge_id}" if outcome is not None else None,
                amount_micros=amount,
                amount=format_amount(amount, customer.currency),
                tab=tab_of(p, customer_id),
            )
            http = {"succeeded": 201, "pending": 202}.get(status, 200)
            return http, dump(out)

        return idempotent(rt, p, key, request, None, run)

    # --- tips -------------------------------------------------------------------------------

    @v1.post("/tips", status_code=201, response_model=b.TipOut, tags=["tips"])
    def tip(body: b.TipCreate, p: Secret, request: Request, key: IdemKey) -> Response:
        """Tip the merchant from the customer's wallet or tab (within the merchant's tip
        limits). ``item`` names what the tip is for; a tip for an item with a revenue split
        is split among its payees like the item's sales, in the tip's own transaction."""

        def run() -> tuple[int, bytes]:
            customer = rt.read(lambda tx: own_customer(tx, p, body.customer))
            receipt = Tips(rt.payments()).tip(
                p.merchant,
                customer.id,
                body.amount_micros,
                domain_key(key),
                body.note,
                item_ref=body.item,
            )
            if not receipt.ok:
                raise tip_error(receipt)
            return 201, dump(
                b.TipOut(
                    id=f"tip_{receipt.tip_id}",
                    customer=body.customer,
                    amount_micros=receipt.amount_micros,
                    amount=format_amount(receipt.amount_micros, receipt.currency),
                    currency=receipt.currency,
                    funding=receipt.funding.value if receipt.funding else "",
                    note=body.note,
                    item=receipt.item_ref,
                )
            )

        return idempotent(rt, p, key, request, body, run)

    # --- subscriptions ------------------------------------------------------------------------

    @v1.put("/plans/{plan_ref}", response_model=b.PlanOut, tags=["subscriptions"])
    def put_plan(plan_ref: PlanPath, body: b.PlanPut, p: Secret) -> b.PlanOut:
        """Create or change a plan: a new price applies to new subscriptions."""
        try:
            plan = Subscriptions(rt.payments()).set_plan(
                p.merchant, plan_ref, body.name, Period(body.period), body.price_micros
            )
        except PaymentsInputError as error:
            raise ApiError("validation_failed", str(error)) from None
        return _plan_out(plan)

    @v1.get("/plans/{plan_ref}", response_model=b.PlanOut, tags=["subscriptions"])
    def get_plan(plan_ref: PlanPath, p: Secret) -> b.PlanOut:
        plan = rt.read(lambda tx: tx.get_plan(p.merchant, plan_ref))
        if plan is None:
            raise ApiError.from_status(SubscriptionStatus.plan_not_found)
        return _plan_out(plan)

    @v1.post(
        "/subscriptions", status_code=201, response_model=b.SubscriptionOut, tags=["subscriptions"]
    )
    def subscribe(
        body: b.SubscriptionCreate, p: Secret, request: Request, key: IdemKey
    ) -> Response:
        """Subscribe a customer and pay the first period (from local midnight in ``time_zone``)
        from the wallet or the tab; each paid period is a purchase with an entitlement to
        the plan ref for exactly that period."""

        def run() -> tuple[int, bytes]:
            customer = rt.read(lambda tx: own_customer(tx, p, body.customer))
            receipt = Subscriptions(rt.payments()).subscribe(
                p.merchant, customer.id, body.plan, domain_key(key), time_zone=body.time_zone
            )
            http, _ = STATUS_HTTP[receipt.status]
            if http >= 400:
                raise ApiError.from_status(receipt.status, receipt.message)
            sub = rt.read(lambda tx: tx.get_subscription(receipt.subscription_id))
            funding = receipt.funding.value if receipt.funding else None
            return http, dump(_subscription_out(sub, body.customer, funding))

        return idempotent(rt, p, key, request, body, run)

    def subscription_view(tx: Any, sub: SubscriptionRecord) -> b.SubscriptionOut:
        customer = tx.get_customer(sub.customer_id)
        return _subscription_out(sub, customer.public_id if customer else "")

    @v1.get(
        "/subscriptions/{subscription_id}",
        response_model=b.SubscriptionOut,
        tags=["subscriptions"],
    )
    def get_subscription(subscription_id: SubscriptionPath, p: Secret) -> b.SubscriptionOut:
        return rt.read(lambda tx: subscription_view(tx, own_subscription(tx, p, subscription_id)))

    @v1.post(
        "/subscriptions/{subscription_id}/cancel",
        response_model=b.SubscriptionOut,
        tags=["subscriptions"],
    )
    def cancel_subscription(
        subscription_id: SubscriptionPath,
        body: b.SubscriptionCancel,
        p: Secret,
        request: Request,
        key: IdemKey,
    ) -> Response:
        """Stop renewing: at period end (default) access lasts to the end of the paid period;
        otherwise access ends now (no money moves: refund the period's purchase if wanted)."""

        def run() -> tuple[int, bytes]:
            sub = rt.read(lambda tx: own_subscription(tx, p, subscription_id))
            receipt = Subscriptions(rt.payments()).cancel(sub.id, at_period_end=body.at_period_end)
            if not receipt.ok:
                raise ApiError.from_status(receipt.status)
            return 200, dump(
                rt.read(lambda tx: subscription_view(tx, own_subscription(tx, p, subscription_id)))
            )

        return idempotent(rt, p, key, request, body, run)

    # --- usage ----------------------------------------------------------------------------------

    @v1.put("/meters/{meter}", response_model=b.MeterOut, tags=["usage"])
    def put_meter(meter: MeterPath, body: b.MeterPut, p: Secret) -> b.MeterOut:
        """Set a meter's unit price (usage already recorded keeps the price it was recorded at)."""
        try:
            m = Metering(rt.payments()).set_meter(p.merchant, meter, body.unit_price_micros)
        except PaymentsInputError as error:
            raise ApiError("validation_failed", str(error)) from None
        return b.MeterOut(meter=m.meter, unit_price_micros=m.unit_price_micros, currency=m.currency)

    @v1.get("/meters/{meter}", response_model=b.MeterOut, tags=["usage"])
    def get_meter(meter: MeterPath, p: Secret) -> b.MeterOut:
        m = rt.read(lambda tx: tx.get_meter(p.merchant, meter))
        if m is None:
            raise ApiError("not_found", "meter not found")
        return b.MeterOut(meter=m.meter, unit_price_micros=m.unit_price_micros, currency=m.currency)

    @v1.post("/usage-events", status_code=201, response_model=b.UsageOut, tags=["usage"])
    def record_usage(body: b.UsageCreate, p: Secret, request: Request, key: IdemKey) -> Response:
        """Record one usage event, priced by the meter now; billed by the next aggregation
        as one transfer per (customer, meter, window)."""

        def run() -> tuple[int, bytes]:
            customer = rt.read(lambda tx: own_customer(tx, p, body.customer))
            internal_key = domain_key(key)
            receipt = Metering(rt.payments()).record_usage(
                p.merchant, customer.id, body.meter, body.quantity, internal_key
            )
            http, _ = STATUS_HTTP[receipt.status]
            if http >= 400:
                raise ApiError.from_status(receipt.status)
            rows = rt.read(
                lambda tx: query(
                    tx,
                    f"SELECT {_USAGE_COLUMNS} FROM usage_events u"
                    " JOIN customers c ON c.id = u.customer_id"
                    " WHERE u.merchant_id = ? AND u.idempotency_key = ?",
                    (p.merchant, internal_key),
                )
            )
            return http, dump(_usage_out(rows[0]))

        return idempotent(rt, p, key, request, body, run)

    @v1.get("/usage-events", response_model=b.UsageList, tags=["usage"])
    def list_usage(
        p: Secret,
        limit: Limit = page_limit_default,
        cursor: Annotated[str | None, Query(pattern=b.UsageId)] = None,
        customer: Annotated[str | None, Query(pattern=r"^cus_[0-9a-f]{16}$")] = None,
    ) -> b.UsageList:
        """The merchant's usage events, oldest first (optionally one customer's)."""

        def page(tx: Any) -> b.UsageList:
            after = 0
            if cursor:
                after = numeric_id(cursor, "use_")
                mine = query(
                    tx,
                    "SELECT id FROM usage_events WHERE id = ? AND merchant_id = ?",
                    (after, p.merchant),
                )
                if not mine:
                    raise ApiError("not_found", "usage event not found")
            only = " AND u.customer_id = ?" if customer else ""
            params: list[object] = [p.merchant, after]
            if customer:
                params.append(own_customer(tx, p, customer).id)
            rows = query(
                tx,
                f"SELECT {_USAGE_COLUMNS} FROM usage_events u"
                " JOIN customers c ON c.id = u.customer_id"
                f" WHERE u.merchant_id = ? AND u.id > ?{only} ORDER BY u.id LIMIT ?",
                (*params, limit + 1),
            )
            data = [_usage_out(r) for r in rows[:limit]]
            more = len(rows) > limit
            return b.UsageList(data=data, has_more=more, next_cursor=data[-1].id if more else None)

        return rt.read(page)

    return v1
