"""Plans of ledger transfers for each payment operation. Pure: ids and amounts come in."""

from __future__ import annotations

import enum

from micropay.core.transfers import Transfer, TransferFlags
from micropay.payments import chart
from micropay.payments.chart import Kind
from micropay.payments.models import FundingSource

_LINKED = int(TransferFlags.LINKED)


class Code(enum.IntEnum):
    """The ``code`` of each transfer: what kind of movement it is (shown in exports).

    One enum for the whole platform, so codes never clash between features.
    """

    topup = 1
    purchase = 2
    tab_settlement = 3
    processor_fee = 4
    refund = 5
    direct_charge = 6
    gift_card_issue = 20
    gift_card_redeem = 21
    gift_card_pos = 22
    gift_card_breakage = 23
    tip = 40
    usage = 41
    subscription = 42
    adjustment = 50
    dispute = 51
    dispute_fee = 52
    dispute_reversal = 53
    platform_fee = 60
    sale_share = 61
    share_release = 62
    fee_reversal = 63
    share_reversal = 64
    payout = 65
    micro_deposit = 66
    micro_deposit_return = 67


def purchase_transfer(
    transfer_id: int,
    source: FundingSource,
    customer_id: int,
    merchant_id: int,
    price_micros: int,
    currency: str,
    reference: str,
) -> Transfer:
    """The customer's wallet or tab pays the merchant."""
    if source is FundingSource.wallet:
        debit = chart.wallet_account(customer_id, currency)
    elif source is FundingSource.store_credit:
        debit = chart.store_credit_account(customer_id, merchant_id, currency)
    elif source is FundingSource.tab:
        debit = chart.tab_account(customer_id, currency)
    else:
        raise ValueError("a direct purchase is paid by a charge, see charge_settled")
    return Transfer(
        transfer_id,
        debit,
        chart.payable_account(merchant_id, currency),
        price_micros,
        currency,
        code=Code.purchase,
        reference=reference,
    )


def charge_settled(
    ids: tuple[int, int],
    credit_account_id: int,
    amount_micros: int,
    fee_micros: int,
    currency: str,
    code: Code,
    reference: str,
) -> list[Transfer]:
    """A processor charge succeeded: clearing pays ``credit_account_id``; the fee is recorded.

    Two linked transfers (ids ``ids``): the amount from
    processor clearing to the credited account (a wallet for a top-up, the tab for
    a settlement, the merchant for a direct purchase), and the processor's fee
    from clearing to the fee expense account.
    """
    clearing = chart.platform_account(Kind.processor_clearing, currency)
    legs = [
        Transfer(
            ids[0],
            clearing,
            credit_account_id,
            amount_micros,
            currency,
            code=code,
            reference=reference,
            flags=_LINKED if fee_micros else 0,
        ),
    ]
    if fee_micros:
        legs.append(
            Transfer(
                ids[1],
                chart.platform_account(Kind.processor_fees, currency),
                clearing,
                fee_micros,
                currency,
                code=Code.processor_fee,
                reference=reference,
            )
        )
    return legs


def refund_to_funding(
    transfer_id: int,
    source: FundingSource,
    customer_id: int,
    merchant_id: int,
    amount_micros: int,
    currency: str,
    reference: str,
) -> Transfer:
    """Give money back the way it came: to the wallet, the tab, or clearing (a card refund)."""
    if source is FundingSource.wallet:
        credit = chart.wallet_account(customer_id, currency)
    elif source is FundingSource.store_credit:
        credit = chart.store_credit_account(customer_id, merchant_id, currency)
    elif source is FundingSource.tab:
        credit = chart.tab_account(customer_id, currency)
    else:
        credit = chart.platform_account(Kind.processor_clearing, currency)
    return Transfer(
        transfer_id,
        chart.payable_account(merchant_id, currency),
        credit,
        amount_micros,
        currency,
        code=Code.refund,
        reference=reference,
    )
