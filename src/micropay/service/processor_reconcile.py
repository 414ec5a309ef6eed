"""Reconcile the processor's books with ours, charge by charge (RELIABILITY item 7).

For every charge the processor says succeeded there is exactly one succeeded
charge record with the same amount, and the ledger credited exactly that amount
once (the transfer whose reference is ``charge:<id>``); and nothing was
credited for a charge the processor does not know.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from micropay.core.money import from_minor_units
from micropay.payments.plans import Code
from micropay.payments.records import ChargeStatus
from micropay.service.ports import PaymentsStore
from micropay.service.reconcile import Violation

CHECK = "processor_matches_ledger"


def reconcile_processor(
    store: PaymentsStore,
    processor_charges: Mapping[str, tuple[int, str]],
    exponent_of: Mapping[str, int] | None = None,
) -> list[Violation]:
    """Compare the processor's successful charges (id -> (minor units, currency)) with ours."""
    problems: list[str] = []
    with store.write() as tx:
        records = tx.charges_for_reconcile()
    with store.read() as reader:
        credited: dict[int, list[int]] = defaultdict(list)
        for t in reader.iter_transfers():
            if t.reference.startswith("charge:") and t.code != Code.processor_fee:
                credited[int(t.reference.removeprefix("charge:"))].append(t.amount_micros)
    seen: set[str] = set()
    for charge in records:
        if charge.status != ChargeStatus.succeeded.value:
            if credited.get(charge.id):
                problems.append(f"charge {charge.id} is {charge.status} but was credited")
            continue
        seen.add(charge.processor_charge_id)
        at_processor = processor_charges.get(charge.processor_charge_id)
        exponent = (exponent_of or {}).get(charge.currency, 2)
        if at_processor is None:
            problems.append(
                f"charge {charge.id}: the processor has no {charge.processor_charge_id}"
            )
        elif from_minor_units(at_processor[0], exponent) != charge.amount_micros:
            problems.append(f"charge {charge.id}: processor amount differs")
        if credited.get(charge.id) != [charge.amount_micros]:
            problems.append(f"charge {charge.id}: credited {credited.get(charge.id)} in the ledger")
    for processor_id in sorted(set(processor_charges) - seen):
        problems.append(f"processor charge {processor_id} was never credited")
    return [Violation(CHECK, p) for p in problems]
