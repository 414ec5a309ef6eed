"""What the SDK returns: small frozen dataclasses, built explicitly from the API's JSON.

Amounts are integer micros (``*_micros``) with the API's decimal string beside
them. Unknown fields the server may add later are ignored, so an older SDK keeps
working against a newer server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    currency: str
    mode: str
    funding_policy: tuple[str, ...]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Merchant:
        return cls(d["id"], d["name"], d["currency"], d["mode"], tuple(d["funding_policy"]))


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    kind: str
    mode: str
    created_at_us: int
    revoked: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ApiKey:
        return cls(d["id"], d["kind"], d["mode"], d["created_at_us"], d["revoked"])


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new API key. ``token`` is shown once (``None`` in a replayed answer) and never in repr."""

    key: ApiKey
    token: str | None = field(repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CreatedKey:
        return cls(ApiKey.from_json(d["key"]), d.get("token"))


@dataclass(frozen=True, slots=True)
class MerchantCreated:
    merchant: Merchant
    secret_key: CreatedKey

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MerchantCreated:
        return cls(Merchant.from_json(d["merchant"]), CreatedKey.from_json(d["secret_key"]))


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    currency: str
    tab_limit_micros: int
    tab_limit: str
    tab_state: str
    has_payment_method: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Customer:
        return cls(
            d["id"],
            d["currency"],
            d["tab_limit_micros"],
            d["tab_limit"],
            d["tab_state"],
            d["has_payment_method"],
        )


@dataclass(frozen=True, slots=True)
class Item:
    item_ref: str
    name: str
    price_micros: int
    price: str
    currency: str
    access_period_s: int  # 0: owned forever once bought
    consumable: bool = False  # a price per use: every purchase charges again

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Item:
        return cls(
            d["item_ref"], d["name"], d["price_micros"], d["price"], d["currency"],
            d["access_period_s"], bool(d.get("consumable", False)),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class TopUp:
    id: str
    status: str
    customer: str
    amount_micros: int
    amount: str
    currency: str
    replayed: bool = False

    @classmethod
    def from_json(cls, d: dict[str, Any], replayed: bool = False) -> TopUp:
        return cls(
            d["id"], d["status"], d["customer"], d["amount_micros"], d["amount"], d["currency"],
            replayed,
        )  # fmt: skip

    @property
    def pending(self) -> bool:
        """The processor has not answered: call again with the same idempotency key."""
        return self.status == "charge_pending"


@dataclass(frozen=True, slots=True)
class Purchase:
    id: str | None
    status: str  # ok | already_entitled | charge_pending (refusals raise)
    customer: str
    item: str
    funding: str | None
    price_micros: int
    price: str
    currency: str
    fee_micros: int
    entitlement_ends_at_us: int
    message: str
    replayed: bool = False  # the server replayed a stored answer for this idempotency key

    @classmethod
    def from_json(cls, d: dict[str, Any], replayed: bool = False) -> Purchase:
        return cls(
            d["id"], d["status"], d["customer"], d["item"], d.get("funding"), d["price_micros"],
            d["price"], d["currency"], d["fee_micros"], d["entitlement_ends_at_us"],
            d.get("message", ""), replayed,
        )  # fmt: skip

    @property
    def pending(self) -> bool:
        """The processor has not answered: call again with the same idempotency key."""
        return self.status == "charge_pending"

    @property
    def granted(self) -> bool:
        """The customer may have the item now (bought now, or owned already)."""
        return self.status in ("ok", "already_entitled")


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    status: str
    purchase: str
    amount_micros: int
    amount: str
    destination: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Refund:
        return cls(
            d["id"], d["status"], d["purchase"], d["amount_micros"], d["amount"], d["destination"]
        )


@dataclass(frozen=True, slots=True)
class Entitlement:
    customer: str
    item: str
    active: bool
    token: str | None = field(repr=False)  # a signed JWT to verify offline; bearer: not shown

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Entitlement:
        return cls(d["customer"], d["item"], d["active"], d.get("token"))


@dataclass(frozen=True, slots=True)
class EntitlementKey:
    kid: str
    alg: str
    public_key_pem: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EntitlementKey:
        return cls(d["kid"], d["alg"], d["public_key_pem"])
