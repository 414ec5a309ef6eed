"""Settlement planning: when to settle tabs and how large top-ups should be. Pure."""

from micropay.settlement.planner import (
    NAIVE_TAB_LIMIT_MICROS,
    NAIVE_TOPUP_MICROS,
    Plan,
    PlannerInput,
    SpendEstimate,
    naive_plan,
    plan,
    tab_cost_micros,
    topup_cost_micros,
    topup_spent_cost_micros,
)

__all__ = [
    "NAIVE_TAB_LIMIT_MICROS",
    "NAIVE_TOPUP_MICROS",
    "Plan",
    "PlannerInput",
    "SpendEstimate",
    "naive_plan",
    "plan",
    "tab_cost_micros",
    "topup_cost_micros",
    "topup_spent_cost_micros",
]
