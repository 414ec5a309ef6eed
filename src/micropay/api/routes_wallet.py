"""Payment methods (processor tokens only) and gift cards.

``/v1/customers/{id}/payment-method`` attaches or detaches the processor's
token for a customer's card; a card number is refused. ``/v1/gift-cards``
issues platform gift cards (operator key; the codes are in that answer only)
and ``/v1/customers/{id}/gift-card-redemptions`` moves all that is left on a
card to the customer: a platform card into the wallet, store credit into the
customer's store credit at its issuing merchant.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from micropay.api import schemas as s
from micropay.api import schemas_wallet as m
from micropay.api.errors import STATUS_HTTP, ApiError
from micropay.api.routes import IdemKey, Operator, Secret
from micropay.api.routes_common import ERRORS, domain_key, dump, execute, idempotent, own_customer
from micropay.api.runtime import Principal, Runtime
from micropay.core.money import format_amount
from micropay.payments.gift_cards import CardKind, RedeemStatus, parse_code
from micropay.payments.models import Customer
from micropay.service.gift_cards import GiftCards

CustomerPath = Annotated[str, Path(pattern=r"^cus_[0-9a-f]{16}$")]


def _customer_out(c: Customer) -> s.CustomerOut:
    return s.CustomerOut(
        id=c.public_id,
        currency=c.currency,
        tab_limit_micros=c.tab_limit_micros,
        tab_limit=format_amount(c.tab_limit_micros, c.currency),
        tab_state=c.tab_state.value,
        has_payment_method=bool(c.payment_method_token),
    )


def build_wallet_router(rt: Runtime) -> APIRouter:
    v1 = APIRouter(prefix="/v1", responses=ERRORS)

    def set_tokens(p: Principal, customer_id: str, method: str, customer_token: str | None) -> Any:
        def change(tx: Any) -> Customer:
            customer = own_customer(tx, p, customer_id)
            execute(
                tx,
                "UPDATE customers SET payment_method_token = ?, processor_customer_token = ?"
                " WHERE id = ?",
                (
                    method,
                    customer.processor_customer_token if customer_token is None else customer_token,
                    customer.id,
                ),
            )
            changed = tx.get_customer(customer.id)
            assert isinstance(changed, Customer)
            return changed

        return _customer_out(rt.write(change))

    @v1.post(
        "/customers/{customer_id}/payment-method",
        response_model=s.CustomerOut,
        tags=["customers"],
    )
    def attach_payment_method(
        customer_id: CustomerPath,
        body: m.PaymentMethodAttach,
        p: Secret,
        request: Request,
        key: IdemKey,
    ) -> Response:
        """Attach the processor's token for the customer's card (replacing any before it).

        Top-ups, direct charges, tab settlements and dunning retries charge it from now on.
        """

        def run() -> tuple[int, bytes]:
            out = set_tokens(
                p, customer_id, body.payment_method_token, body.processor_customer_token
            )
            return 200, dump(out)

        return idempotent(rt, p, key, request, body, run)

    @v1.delete(
        "/customers/{customer_id}/payment-method",
        response_model=s.CustomerOut,
        tags=["customers"],
    )
    def detach_payment_method(customer_id: CustomerPath, p: Secret) -> s.CustomerOut:
        """Forget the customer's card: what needs one (top-ups, direct, tab) answers 402."""
        out: s.CustomerOut = set_tokens(p, customer_id, "", None)
        return out

    # --- gift cards ---------------------------------------------------------------------------

    @v1.post("/gift-cards", status_code=201, response_model=m.GiftCardsIssued, tags=["gift cards"])
    def issue_gift_cards(
        body: m.GiftCardsIssue, p: Operator, request: Request, key: IdemKey
    ) -> Response:
        """Issue platform gift cards (operator key), funded by the platform's gift card
        funding account; any customer may redeem one into the wallet.

        The codes are in this answer only: they are stored hashed, and a replay
        of the same request answers without them.
        """

        def run() -> tuple[int, bytes]:
            batch = GiftCards(rt.payments()).issue_gift_cards(
                body.count,
                body.value_micros,
                body.currency,
                domain_key(key),
                expires_at_us=body.expires_at_us,
            )
            http, _ = STATUS_HTTP[batch.status]
            if http >= 400:
                raise ApiError.from_status(batch.status)
            out = m.GiftCardsIssued(
                batch=f"gcb_{batch.batch_id}",
                status=batch.status.value,
                value_micros=body.value_micros,
                value=format_amount(body.value_micros, body.currency),
                currency=body.currency,
                expires_at_us=body.expires_at_us,
                codes=list(batch.codes),
            )
            replay.append(dump(out.model_copy(update={"codes": []})))
            return http, dump(out)

        replay: list[bytes] = []
        return idempotent(rt, p, key, request, body, run, replay_body=lambda: replay[0])

    @v1.post(
        "/customers/{customer_id}/gift-card-redemptions",
        status_code=201,
        response_model=m.GiftCardRedeemed,
        tags=["gift cards"],
    )
    def redeem_gift_card(
        customer_id: CustomerPath,
        body: m.GiftCardRedeem,
        p: Secret,
        request: Request,
        key: IdemKey,
    ) -> Response:
        """Move everything left on a card to the customer (typed or scanned code).

        Unknown codes count towards a rate limit per customer (429 past it).
        Another merchant's store credit is refused (403 ``wrong_merchant``).
        """

        def run() -> tuple[int, bytes]:
            customer = rt.read(lambda tx: own_customer(tx, p, customer_id))
            cards = GiftCards(rt.payments())
            canonical = parse_code(body.code)
            found = (
                rt.read(lambda tx: tx.find_gift_card(cards.code_hash(canonical)))
                if canonical is not None
                else None
            )
            if (
                found is not None
                and found.kind is CardKind.store_credit
                and found.merchant_id != p.merchant_id
            ):
                # Another merchant's store credit: its customers are not this merchant's.
                raise ApiError.from_status(RedeemStatus.wrong_merchant)
            redemption = cards.redeem(customer.id, body.code, domain_key(key))
            http, _ = STATUS_HTTP[redemption.status]
            if http >= 400:
                raise ApiError.from_status(redemption.status)
            card = cards.card(redemption.card_id)
            assert card is not None
            out = m.GiftCardRedeemed(
                status=redemption.status.value,
                customer=customer_id,
                amount_micros=redemption.amount_micros,
                amount=format_amount(redemption.amount_micros, card.currency),
                currency=card.currency,
                destination="wallet" if card.kind is CardKind.platform else "store_credit",
                replayed=redemption.replayed,
            )
            return http, dump(out)

        return idempotent(rt, p, key, request, body, run)

    return v1
