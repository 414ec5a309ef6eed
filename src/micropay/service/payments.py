"""The payment models' application layer: parties, catalogue, top-ups, purchases, refunds.

One purchase call serves all three models. The merchant's funding policy (for
example wallet, then tab, then direct) picks the first source that can pay,
read under the database's write lock so two concurrent purchases can never
both spend the same money; the ledger's balance flags are the second guard and
the database's CHECK constraints the last. A purchase of something the customer
already owns returns the existing receipt: no one is charged twice for a thing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from micropay.core.accounts import NewAccount, available_micros, open_account
from micropay.core.currencies import is_currency
from micropay.core.engine import LedgerView, apply_batch
from micropay.core.money import Rounding, to_minor_units
from micropay.core.statuses import AccountStatus
from micropay.fees.schedules import CARD_MICRO_USD, CARD_STANDARD_USD, FeeSchedule
from micropay.payments import chart
from micropay.payments.chart import Owner
from micropay.payments.funding import SourceChoice, choose_source
from micropay.payments.models import (
    Customer,
    FundingSource,
    Item,
    Merchant,
    PurchaseStatus,
    TabPolicy,
    TabState,
    TopUpStatus,
    access_period_s_max,
    fee_guard,
    is_valid_key,
    is_valid_price,
    item_ref_chars_max,
    name_chars_max,
    topup_micros_max_default,
    topup_micros_min_default,
)
from micropay.payments.plans import purchase_transfer
from micropay.payments.records import (
    ChargePurpose,
    ChargeStatus,
    EntitlementRecord,
    PurchaseRecord,
)
from micropay.payments.tokens import EntitlementClaims, EntitlementSigner, forever_s
from micropay.service.charges import ChargeEngine, request_hash
from micropay.service.ids import IdGenerator
from micropay.service.ledger import Clock, Ledger, system_clock_us
from micropay.service.ports import PaymentsStore, PaymentsWriteTx, Processor
from micropay.service.refunds import RefundService


class PaymentsInputError(ValueError):
    """Bad input to a setup call (merchant, customer, item): nothing was written."""


@dataclass(frozen=True, slots=True)
class Receipt:
    status: PurchaseStatus
    purchase_id: int = 0
    funding: FundingSource | None = None
    price_micros: int = 0
    currency: str = ""
    entitlement_id: int = 0
    entitlement_ends_at_us: int = 0  # 0: forever
    fee_micros: int = 0
    message: str = ""
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status in (PurchaseStatus.ok, PurchaseStatus.already_entitled)


@dataclass(frozen=True, slots=True)
class _PurchaseRequest:
    merchant_id: int
    customer_id: int
    item_ref: str
    idempotency_key: str
    fingerprint: str
    shown_price: int | None
    shown_currency: str | None


def _purchase_request(
    merchant_id: int,
    customer_id: int,
    item_ref: str,
    idempotency_key: str,
    price_micros: int | None,
    currency: str | None,
) -> _PurchaseRequest | Receipt:
    """The checked request of a purchase, or the receipt refusing it."""
    if not is_valid_key(idempotency_key):
        return Receipt(PurchaseStatus.idempotency_key_invalid)
    if price_micros is not None and not is_valid_price(price_micros):
        return Receipt(PurchaseStatus.price_invalid, message="price must be > 0 micros")
    fingerprint = request_hash(merchant_id, customer_id, item_ref, price_micros, currency)
    return _PurchaseRequest(
        merchant_id, customer_id, item_ref, idempotency_key, fingerprint, price_micros, currency
    )


@dataclass(frozen=True, slots=True)
class TopUpReceipt:
    status: TopUpStatus
    charge_id: int = 0
    amount_micros: int = 0
    replayed: bool = False


class Payments:
    def __init__(
        self,
        store: PaymentsStore,
        processor: Processor,
        *,
        clock: Clock = system_clock_us,
        new_id: IdGenerator | None = None,
        schedules: list[FeeSchedule] | None = None,
        tab_policy: TabPolicy | None = None,
        signer: EntitlementSigner | None = None,
        topup_min_micros: int = topup_micros_min_default,
        topup_max_micros: int = topup_micros_max_default,
    ) -> None:
        self.store = store
        self.clock = clock
        self.new_id = new_id or IdGenerator()
        self.tab_policy = tab_policy or TabPolicy()
        self.ledger = Ledger(store, clock=clock)
        self.charges = ChargeEngine(
            store,
            processor,
            clock=clock,
            new_id=self.new_id,
            schedules=schedules or [CARD_STANDARD_USD, CARD_MICRO_USD],
            tab_policy=self.tab_policy,
        )
        self.charges.direct_paid = self._grant_after_direct_charge
        # Called with (tx, purchase id) in the transaction that makes a purchase
        # paid: revenue splits (payouts) attach here.
        self.sale_hooks: list[Callable[[PaymentsWriteTx, int], object]] = []
        # Merchants as committed: a merchant row is never updated or deleted
        # (its funding policy and fee guard are fixed at creation), so a
        # merchant read once needs no second read in later purchases.
        self._merchants: dict[int, Merchant] = {}
        self.refunds = RefundService(self.charges)
        self.signer = signer or EntitlementSigner.generate()
        self.topup_min_micros = topup_min_micros
        self.topup_max_micros = topup_max_micros

    # --- setup -----------------------------------------------------------

    def open_platform(self, currency: str) -> None:
        """Open the platform's accounts in ``currency`` (idempotent)."""
        if not is_currency(currency):
            raise PaymentsInputError(f"unknown currency {currency!r}")
        self._open(chart.platform_accounts(currency))

    def create_merchant(
        self,
        name: str,
        currency: str,
        *,
        funding_policy: tuple[FundingSource, ...] = (
            FundingSource.wallet,
            FundingSource.tab,
            FundingSource.direct,
        ),
        fee_guard_max_bps: int = 1_500,
        fee_guard_refuses: bool = True,
        also: Callable[[PaymentsWriteTx, Merchant], None] | None = None,
    ) -> Merchant:
        if not isinstance(name, str) or not 0 < len(name) <= name_chars_max:
            raise PaymentsInputError("merchant name must be 1-200 characters")
        if not is_currency(currency):
            raise PaymentsInputError(f"unknown currency {currency!r}")
        if not funding_policy or len(set(funding_policy)) != len(funding_policy):
            raise PaymentsInputError("funding policy must list distinct sources")
        if FundingSource.store_credit in funding_policy:
            raise PaymentsInputError("store credit is always tried first: do not list it")
        if not 0 <= fee_guard_max_bps <= 10_000:
            raise PaymentsInputError("fee guard limit must be 0..10,000 basis points")
        self.open_platform(currency)
        draft = Merchant(
            0,
            f"mer_{secrets.token_hex(8)}",
            name,
            currency,
            tuple(funding_policy),
            fee_guard_max_bps,
            fee_guard_refuses,
        )

        def create(tx: PaymentsWriteTx) -> Merchant:
            merchant_id = tx.insert_merchant(draft, self.clock())
            self._open_in(
                tx,
                [
                    chart.new_account(
                        Owner.merchant, merchant_id, chart.Kind.merchant_payable, currency
                    )
                ],
            )
            merchant = replace(draft, id=merchant_id)
            if also is not None:
                also(tx, merchant)  # the caller's own rows, in the same transaction
            return merchant

        return self.charges.tx(create)

    def create_customer(
        self,
        currency: str,
        *,
        processor_customer_token: str = "",
        payment_method_token: str = "",
        also: Callable[[PaymentsWriteTx, Customer], None] | None = None,
    ) -> Customer:
        """A customer with a wallet and a tab (at the first rung of the trust ladder)."""
        if not is_currency(currency):
            raise PaymentsInputError(f"unknown currency {currency!r}")
        for token in (processor_customer_token, payment_method_token):
            if not isinstance(token, str) or len(token) > 255 or not token.isprintable():
                raise PaymentsInputError("processor tokens must be printable text")
        self.open_platform(currency)
        now_us = self.clock()
        draft = Customer(
            0,
            f"cus_{secrets.token_hex(8)}",
            currency,
            processor_customer_token,
            payment_method_token,
            self.tab_policy.first_limit_micros,
            TabState.open,
            now_us,
            0,
            0,
        )

        def create(tx: PaymentsWriteTx) -> Customer:
            customer_id = tx.insert_customer(draft, now_us)
            self._open_in(
                tx,
                [
                    chart.new_account(
                        Owner.customer, customer_id, chart.Kind.customer_wallet, currency
                    ),
                    chart.new_account(
                        Owner.customer,
                        customer_id,
                        chart.Kind.customer_tab,
                        currency,
                        credit_limit_micros=draft.tab_limit_micros,
                    ),
                ],
            )
            customer = replace(draft, id=customer_id)
            if also is not None:
                also(tx, customer)  # the caller's own rows, in the same transaction
            return customer

        return self.charges.tx(create)

    def set_item(
        self,
        merchant_id: int,
        item_ref: str,
        name: str,
        price_micros: int,
        *,
        access_period_s: int = 0,
        consumable: bool = False,
    ) -> Item:
        """Create or change an item. ``consumable``: a price per use (see ``Item``)."""
        if not is_valid_price(price_micros):
            raise PaymentsInputError("price must be an int of micros, > 0 and <= 10,000 units")
        if (
            not isinstance(item_ref, str)
            or not 0 < len(item_ref) <= item_ref_chars_max
            or not item_ref.isprintable()
        ):
            raise PaymentsInputError("item_ref must be 1-128 printable characters")
        if not isinstance(name, str) or not 0 < len(name) <= name_chars_max:
            raise PaymentsInputError("item name must be 1-200 characters")
        if type(access_period_s) is not int or not 0 <= access_period_s <= access_period_s_max:
            raise PaymentsInputError("access period must be 0 (forever) .. 10 years in seconds")
        if type(consumable) is not bool:
            raise PaymentsInputError("consumable must be true or false")
        if consumable and access_period_s:
            raise PaymentsInputError("a consumable item grants no access period")

        def upsert(tx: PaymentsWriteTx) -> Item:
            merchant = tx.get_merchant(merchant_id)
            if merchant is None:
                raise PaymentsInputError("unknown merchant")
            item = Item(
                merchant_id,
                item_ref,
                name,
                price_micros,
                merchant.currency,
                access_period_s,
                consumable,
            )
            tx.upsert_item(item)
            return item

        return self.charges.tx(upsert)

    # --- wallet top-up ---------------------------------------------------

    def top_up(self, customer_id: int, amount_micros: int, idempotency_key: str) -> TopUpReceipt:
        """Load the wallet with one processor charge (idempotent per customer and key)."""
        if not is_valid_key(idempotency_key):
            return TopUpReceipt(TopUpStatus.idempotency_key_invalid)
        if type(amount_micros) is not int:
            return TopUpReceipt(TopUpStatus.amount_invalid)
        fingerprint = request_hash("topup", customer_id, amount_micros)

        def record(tx: PaymentsWriteTx) -> TopUpReceipt | int:
            customer = tx.get_customer(customer_id)
            if customer is None:
                return TopUpReceipt(TopUpStatus.customer_not_found)
            existing = tx.find_charge(customer_id, ChargePurpose.topup.value, idempotency_key)
            if existing is not None:
                if existing.request_hash != fingerprint:
                    return TopUpReceipt(TopUpStatus.idempotency_key_reused)
                return existing.id
            refusal = self._topup_refusal(customer, amount_micros)
            if refusal is not None:
                return TopUpReceipt(refusal)
            charge = self.charges.new_charge(
                customer,
                ChargePurpose.topup,
                amount_micros,
                customer.currency,
                client_key=idempotency_key,
                fingerprint=fingerprint,
            )
            if charge is None:
                return TopUpReceipt(TopUpStatus.amount_below_minimum)
            tx.insert_charge(charge)
            return charge.id

        recorded = self.charges.tx(record)
        if isinstance(recorded, TopUpReceipt):
            return recorded
        outcome = self.charges.run(recorded)
        status = {
            ChargeStatus.succeeded: TopUpStatus.ok,
            ChargeStatus.pending: TopUpStatus.charge_pending,
            ChargeStatus.declined: TopUpStatus.charge_declined,
        }[outcome.status]
        return TopUpReceipt(status, recorded, amount_micros)

    def set_auto_reload(self, customer_id: int, threshold_micros: int, amount_micros: int) -> None:
        """Top the wallet up by ``amount_micros`` whenever it falls below ``threshold_micros``.

        An amount of 0 turns auto-reload off. The amount obeys the top-up limits.
        """
        if type(threshold_micros) is not int or type(amount_micros) is not int:
            raise PaymentsInputError("auto-reload amounts must be int micros")
        if threshold_micros < 0 or amount_micros < 0:
            raise PaymentsInputError("auto-reload amounts must not be negative")

        def update(tx: PaymentsWriteTx) -> None:
            customer = tx.get_customer(customer_id)
            if customer is None:
                raise PaymentsInputError("unknown customer")
            if amount_micros:
                refusal = self._topup_refusal(customer, amount_micros)
                if refusal is not None:
                    raise PaymentsInputError(f"auto-reload amount refused: {refusal.value}")
            tx.update_customer_auto_reload(customer_id, threshold_micros, amount_micros)

        self.charges.tx(update)

    def _auto_reload(self, customer_id: int, key: str) -> TopUpReceipt | None:
        customer = self.charges.tx(lambda tx: tx.get_customer(customer_id))
        if customer is None or not customer.auto_reload_amount_micros:
            return None
        return self.top_up(customer_id, customer.auto_reload_amount_micros, key)

    def _reload_below_threshold(self, customer_id: int, key: str) -> None:
        # A read is enough: the top-up is idempotent under ``key``, and a
        # wallet that a concurrent purchase drains further is seen by that one.
        with self.store.read() as reader:
            customer = reader.get_customer(customer_id)
            if customer is None or not customer.auto_reload_amount_micros:
                return
            wallet_id = chart.wallet_account(customer_id, customer.currency)
            wallet = reader.get_accounts([wallet_id]).get(wallet_id)
            low = wallet is not None and (
                available_micros(wallet) < customer.auto_reload_threshold_micros
            )
        if low:
            self._auto_reload(customer_id, key)

    def _topup_refusal(self, customer: Customer, amount_micros: int) -> TopUpStatus | None:
        if amount_micros <= 0:
            return TopUpStatus.amount_invalid
        if amount_micros < self.topup_min_micros:
            return TopUpStatus.amount_below_minimum
        if amount_micros > self.topup_max_micros:
            return TopUpStatus.amount_above_maximum
        exponent = self.charges.processor.minor_exponent(customer.currency)
        if to_minor_units(amount_micros, exponent, Rounding.DOWN)[1]:
            return TopUpStatus.not_whole_minor_units
        if not customer.payment_method_token:
            return TopUpStatus.no_payment_method
        return None

    # --- purchase ----------------------------------------------------------

    def purchase(
        self,
        merchant_id: int,
        customer_id: int,
        item_ref: str,
        idempotency_key: str,
        *,
        price_micros: int | None = None,
        currency: str | None = None,
    ) -> Receipt:
        """Buy ``item_ref``: the funding policy decides how it is paid. Idempotent per key.

        ``price_micros`` and ``currency``, when given, are what the customer was
        shown: a different catalogue price refuses the purchase (``price_invalid``).
        """
        request = _purchase_request(
            merchant_id, customer_id, item_ref, idempotency_key, price_micros, currency
        )
        if isinstance(request, Receipt):
            return request
        outcome = self.charges.tx(lambda tx: self._purchase_in(tx, request, retried=False))
        if isinstance(outcome, SourceChoice) and outcome.settle_tab:
            # The tab is full: settle it in one charge, then try once more.
            self.charges.settle_tab(customer_id, forced=True)
            outcome = self.charges.tx(lambda tx: self._purchase_in(tx, request, retried=True))
        elif isinstance(outcome, SourceChoice) and outcome.reload_wallet:
            # The wallet is short and auto-reload is on: top up once, then try once more.
            self._auto_reload(customer_id, f"auto:{merchant_id}:{idempotency_key}")
            outcome = self.charges.tx(lambda tx: self._purchase_in(tx, request, retried=True))
        if isinstance(outcome, Receipt):
            self.after_purchase(customer_id, outcome)
            return outcome
        return self._charge_direct(outcome)

    def purchase_in(
        self,
        tx: PaymentsWriteTx,
        merchant_id: int,
        customer_id: int,
        item_ref: str,
        idempotency_key: str,
        *,
        price_micros: int | None = None,
        currency: str | None = None,
    ) -> Receipt | None:
        """``purchase`` inside the caller's write transaction, when it needs nothing else.

        Returns the receipt of a purchase that the wallet, the tab or store
        credit pays (or a refusal, or a replay), written in ``tx``; the caller
        commits it and then calls :meth:`after_purchase`. Returns ``None``, with
        nothing written, when the purchase needs a processor call (a card
        charge, a tab settlement, an auto-reload): use :meth:`purchase`.
        """
        request = _purchase_request(
            merchant_id, customer_id, item_ref, idempotency_key, price_micros, currency
        )
        if isinstance(request, Receipt):
            return request
        outcome = self._purchase_in(tx, request, retried=False, start_direct=False)
        return outcome if isinstance(outcome, Receipt) else None

    def after_purchase(self, customer_id: int, receipt: Receipt) -> None:
        """What follows a committed :meth:`purchase_in`: auto-reload below the threshold."""
        if receipt.funding is FundingSource.wallet and not receipt.replayed:
            self._reload_below_threshold(customer_id, f"auto:after:{receipt.purchase_id}")

    def _purchase_in(
        self,
        tx: PaymentsWriteTx,
        request: _PurchaseRequest,
        *,
        retried: bool,
        start_direct: bool = True,
    ) -> Receipt | SourceChoice:
        """The purchase's writes in ``tx``: a receipt, or what must happen outside it.

        ``start_direct`` False: a purchase that needs a direct charge returns
        the choice with nothing written (the caller takes the general path).
        """
        now_us = self.clock()
        merchant_id, customer_id = request.merchant_id, request.customer_id
        item_ref, key, fingerprint = request.item_ref, request.idempotency_key, request.fingerprint
        shown_price, shown_currency = request.shown_price, request.shown_currency
        merchant = self._merchants.get(merchant_id)
        if merchant is not None:
            tx.remember_merchant(merchant)  # the sale hooks read it too
        else:
            merchant = tx.get_merchant(merchant_id)
        if merchant is None:
            return Receipt(PurchaseStatus.merchant_not_found)
        if len(self._merchants) >= merchants_cached_max:
            self._merchants.clear()
        self._merchants[merchant_id] = merchant
        customer = tx.get_customer(customer_id)
        item = tx.get_item(merchant_id, item_ref) if isinstance(item_ref, str) else None
        if customer is None or item is None:
            existing = tx.find_purchase(merchant_id, key)
            if existing is not None:
                return self._replay(tx, existing, fingerprint)
            status = PurchaseStatus.customer_not_found if customer is None else None
            return Receipt(status or PurchaseStatus.item_not_found)
        # Lock first, then read what concurrent purchases of this customer may
        # have written: under READ COMMITTED every read below sees whatever a
        # competing transaction committed before this one got the locks.
        wallet_id = chart.wallet_account(customer_id, item.currency)
        tab_id = chart.tab_account(customer_id, item.currency)
        credit_id = _store_credit_id(customer_id, merchant_id, item.currency)
        payable_id = chart.payable_account(merchant_id, item.currency)
        accounts = tx.lock_accounts(
            [wallet_id, tab_id, payable_id, *([credit_id] if credit_id else [])]
        )
        existing, waiting = tx.purchase_lookups(merchant_id, key, customer_id, item_ref)
        if existing is not None:
            return self._replay(tx, existing, fingerprint)
        if shown_currency is not None and shown_currency != item.currency:
            return Receipt(
                PurchaseStatus.currency_not_sold, message=f"this merchant sells in {item.currency}"
            )
        if customer.currency != item.currency:
            return Receipt(
                PurchaseStatus.currency_not_sold,
                message=f"the customer's wallet is in {customer.currency}",
            )
        if shown_price is not None and shown_price != item.price_micros:
            return Receipt(PurchaseStatus.price_invalid, message="the price has changed")
        # A consumable is bought afresh every time: nothing owned, nothing waiting.
        owned = (
            None
            if item.consumable
            else tx.active_entitlement(merchant_id, customer_id, item_ref, now_us)
        )
        if owned is not None:
            first = tx.get_purchase(owned.purchase_id)
            if first is not None:
                receipt = self._receipt(tx, first, replayed=True)
                return replace(receipt, status=PurchaseStatus.already_entitled)
        store_credit = accounts.get(credit_id) if credit_id else None
        # A direct charge for this item already waits for the processor: that is
        # this purchase (a second key must not start a second charge). Only a
        # merchant that takes direct charges (fixed at creation) can have one.
        if (
            waiting is not None
            and not item.consumable
            and FundingSource.direct in merchant.funding_policy
        ):
            return self._receipt(tx, waiting, replayed=True)
        guard = None
        if FundingSource.direct in merchant.funding_policy:
            schedule = self.charges.schedule_for(item.price_micros, item.currency)
            exponent = self.charges.processor.minor_exponent(item.currency)
            if to_minor_units(item.price_micros, exponent, Rounding.DOWN)[1]:
                schedule = None  # a card charges whole minor units only
            guard = (
                None
                if schedule is None
                else fee_guard(
                    item.price_micros,
                    schedule,
                    merchant.fee_guard_max_bps,
                    merchant.fee_guard_refuses,
                )
            )
        choice = choose_source(
            (FundingSource.store_credit, *merchant.funding_policy)
            if store_credit
            else merchant.funding_policy,
            item.price_micros,
            wallet_available=available_micros(accounts[wallet_id]),
            tab_available=available_micros(accounts[tab_id]),
            tab_frozen=customer.tab_state is TabState.frozen,
            # Settling helps only if the price fits the limit a paid settlement gives.
            tab_settlable=not retried
            and item.price_micros
            <= self.tab_policy.raised_limit(accounts[tab_id].credit_limit_micros),
            wallet_reloadable=not retried and customer.auto_reload_amount_micros > 0,
            has_payment_method=bool(customer.payment_method_token),
            guard=guard,
            store_credit_available=available_micros(store_credit) if store_credit else 0,
        )
        if choice.refusal is not None:
            return Receipt(
                choice.refusal,
                price_micros=item.price_micros,
                currency=item.currency,
                message=choice.message,
            )
        if choice.source in (FundingSource.store_credit, FundingSource.wallet, FundingSource.tab):
            source = choice.source
            purchase_id = self.new_id()
            transfer = purchase_transfer(
                self.new_id(),
                source,
                customer_id,
                merchant_id,
                item.price_micros,
                item.currency,
                reference=f"purchase:{purchase_id}",
            )
            # The accounts are locked and the transfer's id is new (a taken id
            # fails the insert, and the retried transaction draws another): the
            # engine needs nothing more read.
            view = LedgerView(accounts, {}, {}, {})
            outcome = apply_batch([transfer], view, now_us)
            [result] = outcome.results
            if outcome.transfers:
                tx.insert_transfers(outcome.transfers)
            if outcome.rejections:
                tx.insert_rejections(outcome.rejections)
            if outcome.deltas:
                tx.apply_deltas(outcome.deltas)
            if not result.ok:
                return Receipt(PurchaseStatus.insufficient_funds, message=result.status.value)
            record = PurchaseRecord(
                purchase_id,
                merchant_id,
                customer_id,
                item_ref,
                item.price_micros,
                item.currency,
                source,
                "ok",
                transfer.id,
                None,
                key,
                fingerprint,
                0,
                now_us,
            )
            tx.insert_purchase(record)
            self._run_sale_hooks(tx, record.id)
            if item.consumable:
                return self._receipt(tx, record, granted=_NOTHING_GRANTED)
            granted = self._grant(tx, record, item.access_period_s, now_us)
            return self._receipt(tx, record, granted=granted)
        if choice.source is FundingSource.direct:
            if not start_direct:
                return choice
            purchase_id = self.new_id()
            charge = self.charges.new_charge(
                customer,
                ChargePurpose.direct,
                item.price_micros,
                item.currency,
                client_key=None,
                fingerprint=fingerprint,
                purchase_id=purchase_id,
            )
            if charge is None:
                return Receipt(PurchaseStatus.fee_guard_refused, message="cannot be charged")
            tx.insert_purchase(
                PurchaseRecord(
                    purchase_id,
                    merchant_id,
                    customer_id,
                    item_ref,
                    item.price_micros,
                    item.currency,
                    FundingSource.direct,
                    "charge_pending",
                    None,
                    charge.id,
                    key,
                    fingerprint,
                    0,
                    now_us,
                )
            )
            tx.insert_charge(charge)
            return SourceChoice(
                source=FundingSource.direct,
                charge_id=charge.id,
                purchase_id=purchase_id,
                message=choice.message,
            )
        return choice  # settle the tab, then try again

    def _charge_direct(self, choice: SourceChoice) -> Receipt:
        self.charges.run(choice.charge_id)

        def read(tx: PaymentsWriteTx) -> Receipt:
            purchase = tx.get_purchase(choice.purchase_id)
            if purchase is None:
                raise KeyError(f"purchase {choice.purchase_id} vanished")
            receipt = self._receipt(tx, purchase)
            return replace(receipt, message=choice.message or receipt.message)

        return self.charges.tx(read)

    def _grant(
        self, tx: PaymentsWriteTx, p: PurchaseRecord, period_s: int, now_us: int
    ) -> EntitlementRecord:
        granted = EntitlementRecord(
            self.new_id(),
            p.merchant_id,
            p.customer_id,
            p.item_ref,
            p.id,
            now_us,
            now_us + period_s * 1_000_000 if period_s else 0,
            False,
        )
        tx.insert_entitlement(granted)
        return granted

    def _grant_after_direct_charge(
        self, tx: PaymentsWriteTx, purchase_id: int, now_us: int
    ) -> None:
        purchase = tx.get_purchase(purchase_id)
        if purchase is None:
            raise KeyError(f"purchase {purchase_id} vanished")
        item = tx.get_item(purchase.merchant_id, purchase.item_ref)
        if item is None or not item.consumable:
            self._grant(tx, purchase, item.access_period_s if item else 0, now_us)
        self._run_sale_hooks(tx, purchase_id)

    def _run_sale_hooks(self, tx: PaymentsWriteTx, purchase_id: int) -> None:
        for hook in self.sale_hooks:
            hook(tx, purchase_id)

    def _replay(self, tx: PaymentsWriteTx, existing: PurchaseRecord, fingerprint: str) -> Receipt:
        if existing.request_hash != fingerprint:
            return Receipt(
                PurchaseStatus.idempotency_key_reused,
                message="this key was used for a different purchase",
            )
        return self._receipt(tx, existing, replayed=True)

    def _receipt(
        self,
        tx: PaymentsWriteTx,
        p: PurchaseRecord,
        *,
        replayed: bool = False,
        granted: EntitlementRecord | None = None,
    ) -> Receipt:
        """The receipt of ``p``; ``granted``: the entitlement this transaction just gave it."""
        entitlement = granted or tx.active_entitlement(
            p.merchant_id, p.customer_id, p.item_ref, self.clock()
        )
        fee = 0
        if p.charge_id:
            charge = tx.get_charge(p.charge_id)
            fee = charge.fee_micros if charge else 0
        return Receipt(
            PurchaseStatus(p.status),
            p.id,
            p.funding,
            p.price_micros,
            p.currency,
            entitlement.id if entitlement and entitlement.purchase_id == p.id else 0,
            entitlement.ends_at_us if entitlement and entitlement.purchase_id == p.id else 0,
            fee,
            "",
            replayed,
        )

    # --- access ------------------------------------------------------------

    def has_access(self, merchant_id: int, customer_id: int, item_ref: str) -> bool:
        return (
            self.charges.tx(
                lambda tx: tx.active_entitlement(merchant_id, customer_id, item_ref, self.clock())
            )
            is not None
        )

    def entitlement_token(self, merchant_id: int, customer_id: int, item_ref: str) -> str | None:
        """A signed token the merchant can verify offline, or None without an entitlement."""
        now_us = self.clock()

        def read(tx: PaymentsWriteTx) -> str | None:
            entitlement = tx.active_entitlement(merchant_id, customer_id, item_ref, now_us)
            merchant, customer = tx.get_merchant(merchant_id), tx.get_customer(customer_id)
            if entitlement is None or merchant is None or customer is None:
                return None
            now_s = now_us // 1_000_000
            expires_s = (
                entitlement.ends_at_us // 1_000_000 if entitlement.ends_at_us else now_s + forever_s
            )
            return self.signer.sign(
                EntitlementClaims(
                    customer.public_id, merchant.public_id, item_ref, entitlement.id, expires_s
                ),
                now_s,
            )

        return self.charges.tx(read)

    # --- helpers -------------------------------------------------------------

    def _open(self, requests: list[NewAccount]) -> None:
        results = self.ledger.create_accounts(requests)
        if any(r.status is not AccountStatus.ok for r in results):
            raise PaymentsInputError(f"cannot open accounts: {results}")

    def _open_in(self, tx: PaymentsWriteTx, requests: list[NewAccount]) -> None:
        existing = tx.lock_accounts([r.id for r in requests])
        fresh = [open_account(r, self.clock()) for r in requests if r.id not in existing]
        if fresh:
            tx.insert_accounts(fresh)


merchants_cached_max = 10_000
# The receipt of a consumable's purchase: no entitlement (ids start at 1).
_NOTHING_GRANTED = EntitlementRecord(0, 0, 0, "", 0, 0, 0, True)


def _store_credit_id(customer_id: int, merchant_id: int, currency: str) -> int:
    """The customer's store-credit account at this merchant, or 0 where none can exist."""
    try:
        return chart.store_credit_account(customer_id, merchant_id, currency)
    except ValueError:
        return 0
