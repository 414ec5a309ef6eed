"""Bounded retries of whole database operations on transient store errors."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from micropay.core import limits
from micropay.service.ports import StoreError, TransientStoreError

T = TypeVar("T")


def run_with_retries(
    operation: Callable[[], T],
    *,
    retries_max: int = limits.store_retries_max,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``operation``; on ``TransientStoreError`` run it again, at most ``retries_max`` times.

    Back-off is jittered and capped at ``store_retry_backoff_s_max``. The last
    error propagates.
    """
    for attempt in range(retries_max + 1):
        try:
            return operation()
        except TransientStoreError:
            if attempt == retries_max:
                raise
            if on_retry is not None:
                on_retry()
            backoff_s = min(limits.store_retry_backoff_s_max, 0.001 * 2**attempt)
            time.sleep(random.uniform(0, backoff_s))
    raise StoreError("unreachable: retry loop exited without a result")
