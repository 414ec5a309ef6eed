"""``micropay demo``: a demo platform with a simulated month, served by the API."""

from micropay.demo.platform import (
    DemoMerchant,
    DemoResult,
    NotADemoError,
    UnfinishedDemoError,
    build_demo,
    reopen_demo,
    steps,
)

__all__ = [
    "DemoMerchant",
    "DemoResult",
    "NotADemoError",
    "UnfinishedDemoError",
    "build_demo",
    "reopen_demo",
    "steps",
]
