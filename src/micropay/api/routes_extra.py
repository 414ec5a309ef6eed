"""The ``/v1`` endpoints built outside :mod:`micropay.api.routes`, as one router for the app."""

from __future__ import annotations

from fastapi import APIRouter

from micropay.api.routes_billing import build_billing_router
from micropay.api.routes_payouts import build_payouts_router
from micropay.api.routes_wallet import build_wallet_router
from micropay.api.routes_webhooks import build_webhooks_router
from micropay.api.runtime import Runtime


def build_extra_router(rt: Runtime) -> APIRouter:
    router = APIRouter()
    router.include_router(build_webhooks_router(rt))
    router.include_router(build_billing_router(rt))
    router.include_router(build_wallet_router(rt))
    router.include_router(build_payouts_router(rt))
    return router
