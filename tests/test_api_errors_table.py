"""Every domain status has exactly one row in the API's table, and refusals are 4xx."""

from __future__ import annotations

import enum

import pytest

from micropay.api.errors import API_ERRORS, STATUS_HTTP, ApiError
from micropay.core.statuses import TransferStatus
from micropay.payments.billing import SubscriptionStatus, TipStatus, UsageStatus
from micropay.payments.gift_cards import IssueStatus, RedeemStatus
from micropay.payments.models import PurchaseStatus, TopUpStatus
from micropay.service.refunds import RefundStatus

ENUMS: list[type[enum.Enum]] = [
    PurchaseStatus,
    TopUpStatus,
    RefundStatus,
    TransferStatus,
    IssueStatus,
    RedeemStatus,
    SubscriptionStatus,
    UsageStatus,
    TipStatus,
]


@pytest.mark.parametrize("status_enum", ENUMS, ids=lambda e: e.__name__)
def test_every_status_has_a_row(status_enum: type[enum.Enum]) -> None:
    missing = [m for m in status_enum if m not in STATUS_HTTP]
    assert missing == []


def test_no_row_names_a_status_outside_the_listed_enums() -> None:
    assert {type(status) for status in STATUS_HTTP} == set(ENUMS)


@pytest.mark.parametrize("status", list(STATUS_HTTP), ids=lambda s: f"{type(s).__name__}.{s.name}")
def test_successes_are_2xx_and_refusals_4xx(status: enum.Enum) -> None:
    http, message = STATUS_HTTP[status]
    assert message
    success = status.value in {"ok", "already_entitled", "charge_pending", "pending"}
    assert (200 <= http < 300) if success else (400 <= http < 500), (status, http)
    if not success:
        error = ApiError.from_status(status)
        assert (error.code, error.status) == (status.value, http)


def test_api_codes_are_stable_and_known() -> None:
    assert all(400 <= http < 600 for http in API_ERRORS.values())
    with pytest.raises(KeyError):
        ApiError("no_such_code", "x")
    with pytest.raises(ValueError, match="not a refusal"):
        ApiError.from_status(PurchaseStatus.ok)
