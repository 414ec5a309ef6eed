"""Apply a settlement plan to the existing knobs of the payments service.

The planner is pure; this adapter turns a plan into a ``TabPolicy`` (tab limit
with no trust-ladder steps, the period minimum that makes a tab carry) and an
auto-reload amount set through ``Payments.set_auto_reload``.
"""

from __future__ import annotations

from dataclasses import replace

from micropay.payments.models import TabPolicy
from micropay.service.payments import Payments
from micropay.settlement.planner import Plan


def tab_policy_for(plan: Plan, *, period_s: int, carry_max_age_s: int) -> TabPolicy:
    """A tab at the planned limit from the first day, billed per ``period_s``."""
    base = TabPolicy()
    return replace(
        base,
        first_limit_micros=plan.tab_limit_micros,
        step_micros=0,
        cap_micros=plan.tab_limit_micros,
        period_s=period_s,
        period_minimum_micros=plan.period_minimum_micros or base.period_minimum_micros,
        carry_max_age_s=carry_max_age_s,
    )


def enable_auto_reload(payments: Payments, customer_id: int, plan: Plan) -> None:
    """Top the wallet up by the planned amount whenever it cannot pay (threshold 0)."""
    payments.set_auto_reload(customer_id, 0, plan.topup_micros)
