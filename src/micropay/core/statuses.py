"""Result statuses of ledger operations, as values that read as sentences.

Business rejections are values, not exceptions. Every transfer in a batch gets
exactly one status. Checks run in the order the members of
:class:`TransferStatus` are declared below (the *order of precedence*): the
first failing check names the status. The order is part of the contract and is
tested row by row.

Three phases:

1. **Request checks** (``linked_event_chain_open`` .. ``metadata_too_large``)
   look only at the request (``text_must_be_valid``: reference and metadata
   must be UTF-8 encodable without NUL characters, which no store can hold).
   Their failures are *not* remembered: the same
   request fails the same way again, and a corrected request may reuse the id
   (as Stripe does not save results of requests that failed validation).
2. **Idempotency**: an id seen before returns the first result (``replayed``)
   when the request is the same, else ``id_already_used_with_different_request``.
3. **State checks** (``debit_account_not_found`` .. ``exceeds_debits``) depend
   on the ledger's state. Their failures *are* remembered, so a retry can never
   later succeed differently: a failed id stays failed.
"""

from __future__ import annotations

import enum


class TransferStatus(enum.Enum):
    """Outcome of one transfer; declaration order is the order of precedence."""

    ok = "ok"
    # --- request checks (not remembered) ---
    linked_event_failed = "linked_event_failed"
    linked_event_chain_open = "linked_event_chain_open"
    id_must_be_positive = "id_must_be_positive"
    id_must_not_exceed_max = "id_must_not_exceed_max"
    id_reserved_for_system = "id_reserved_for_system"
    flags_are_unknown = "flags_are_unknown"
    flags_are_mutually_exclusive = "flags_are_mutually_exclusive"
    expire_reserved_for_system = "expire_reserved_for_system"
    debit_account_id_must_be_positive = "debit_account_id_must_be_positive"
    credit_account_id_must_be_positive = "credit_account_id_must_be_positive"
    accounts_must_be_different = "accounts_must_be_different"
    pending_id_must_be_zero = "pending_id_must_be_zero"
    pending_id_must_be_positive = "pending_id_must_be_positive"
    pending_id_must_be_different = "pending_id_must_be_different"
    timeout_reserved_for_pending_transfer = "timeout_reserved_for_pending_transfer"
    timeout_must_be_in_range = "timeout_must_be_in_range"
    amount_must_be_an_int = "amount_must_be_an_int"
    amount_must_be_positive = "amount_must_be_positive"
    amount_exceeds_max = "amount_exceeds_max"
    currency_must_be_valid = "currency_must_be_valid"
    code_must_be_in_range = "code_must_be_in_range"
    text_must_be_valid = "text_must_be_valid"
    reference_too_long = "reference_too_long"
    metadata_too_large = "metadata_too_large"
    # --- idempotency ---
    id_already_used_with_different_request = "id_already_used_with_different_request"
    # --- state checks (remembered) ---
    pending_transfer_not_found = "pending_transfer_not_found"
    pending_transfer_not_pending = "pending_transfer_not_pending"
    pending_transfer_has_different_debit_account_id = (
        "pending_transfer_has_different_debit_account_id"
    )
    pending_transfer_has_different_credit_account_id = (
        "pending_transfer_has_different_credit_account_id"
    )
    pending_transfer_has_different_currency = "pending_transfer_has_different_currency"
    exceeds_pending_transfer_amount = "exceeds_pending_transfer_amount"
    pending_transfer_has_different_amount = "pending_transfer_has_different_amount"
    pending_transfer_already_posted = "pending_transfer_already_posted"
    pending_transfer_already_voided = "pending_transfer_already_voided"
    pending_transfer_expired = "pending_transfer_expired"
    pending_transfer_not_expired = "pending_transfer_not_expired"
    debit_account_not_found = "debit_account_not_found"
    credit_account_not_found = "credit_account_not_found"
    accounts_must_have_the_same_currency = "accounts_must_have_the_same_currency"
    transfer_must_have_the_same_currency_as_accounts = (
        "transfer_must_have_the_same_currency_as_accounts"
    )
    overflows_debits_pending = "overflows_debits_pending"
    overflows_credits_pending = "overflows_credits_pending"
    overflows_debits_posted = "overflows_debits_posted"
    overflows_credits_posted = "overflows_credits_posted"
    overflows_debits = "overflows_debits"
    overflows_credits = "overflows_credits"
    overflows_timeout = "overflows_timeout"
    exceeds_credits = "exceeds_credits"
    exceeds_debits = "exceeds_debits"

    @property
    def is_remembered(self) -> bool:
        """True for state-check failures, which are stored against the id."""
        return (
            _precedence[self] > _precedence[TransferStatus.id_already_used_with_different_request]
        )


_precedence = {status: rank for rank, status in enumerate(TransferStatus)}


def precedence(status: TransferStatus) -> int:
    """Rank of ``status`` in the order of precedence (lower is checked first)."""
    return _precedence[status]


class AccountStatus(enum.Enum):
    """Outcome of creating one account; declaration order is precedence."""

    ok = "ok"
    id_must_be_positive = "id_must_be_positive"
    id_must_not_exceed_max = "id_must_not_exceed_max"
    flags_are_unknown = "flags_are_unknown"
    flags_are_mutually_exclusive = "flags_are_mutually_exclusive"
    currency_must_be_valid = "currency_must_be_valid"
    kind_must_be_valid = "kind_must_be_valid"
    text_must_be_valid = "text_must_be_valid"
    owner_ref_too_long = "owner_ref_too_long"
    credit_limit_must_be_in_range = "credit_limit_must_be_in_range"
    credit_limit_requires_a_balance_flag = "credit_limit_requires_a_balance_flag"
    exists_with_different_fields = "exists_with_different_fields"
