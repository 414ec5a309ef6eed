"""Which source pays a purchase: the merchant's funding policy, in order. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from micropay.payments.models import FeeGuardDecision, FundingSource, PurchaseStatus


@dataclass(frozen=True, slots=True)
class SourceChoice:
    """Either a source, a request to settle the full tab first, or a refusal (with its reason)."""

    source: FundingSource | None = None
    settle_tab: bool = False
    reload_wallet: bool = False
    refusal: PurchaseStatus | None = None
    message: str = ""
    charge_id: int = 0
    purchase_id: int = 0


def choose_source(
    policy: Sequence[FundingSource],
    price_micros: int,
    *,
    wallet_available: int,
    tab_available: int,
    tab_frozen: bool,
    tab_settlable: bool,
    wallet_reloadable: bool = False,
    has_payment_method: bool,
    guard: FeeGuardDecision | None,
    store_credit_available: int = 0,
) -> SourceChoice:
    """Walk the policy; the first source that can pay wins.

    - store credit (the caller puts it first at the issuing merchant): pays if
      it covers the whole price;
    - wallet: pays if its available balance covers the price; with auto-reload
      on, a short wallet is topped up first (one charge) and tried again — once;
    - tab: pays if its remaining credit line covers the price; if the tab is
      full, settle it first (one charge) and try again — once;
    - direct: a card charge, if the customer has a payment method and the fee
      guard allows it (a warning travels with the choice).

    Refusal reasons name what blocked the purchase: a frozen tab, the fee guard,
    a missing payment method, or plain insufficient funds.
    """
    blocked: list[tuple[PurchaseStatus, str]] = []
    for source in policy:
        if source is FundingSource.store_credit:
            if store_credit_available >= price_micros:
                return SourceChoice(source=source)
        elif source is FundingSource.wallet:
            if wallet_available >= price_micros:
                return SourceChoice(source=source)
            if wallet_reloadable and has_payment_method:
                return SourceChoice(reload_wallet=True)
        elif source is FundingSource.tab:
            if tab_frozen:
                blocked.append(
                    (PurchaseStatus.tab_frozen, "the tab is frozen until its last charge is paid")
                )
            elif tab_available >= price_micros:
                return SourceChoice(source=source)
            elif tab_settlable and has_payment_method:
                return SourceChoice(settle_tab=True)
        elif source is FundingSource.direct:
            if not has_payment_method:
                blocked.append((PurchaseStatus.no_payment_method, "no saved payment method"))
            elif guard is None:
                blocked.append(
                    (
                        PurchaseStatus.fee_guard_refused,
                        "no fee schedule can charge this amount directly",
                    )
                )
            elif not guard.allowed:
                blocked.append((PurchaseStatus.fee_guard_refused, guard.warning))
            else:
                return SourceChoice(source=source, message=guard.warning)
    if blocked:
        status, message = blocked[0]
        return SourceChoice(refusal=status, message=message)
    return SourceChoice(
        refusal=PurchaseStatus.insufficient_funds, message="no source in the funding policy can pay"
    )
