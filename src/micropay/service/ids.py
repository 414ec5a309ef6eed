"""Transfer and account ids: positive 62-bit integers, roughly time-ordered.

Layout: milliseconds since 2025-01-01 (41 bits) | a per-generator random tag
(9 bits) | a counter within the millisecond (12 bits). Ids stay below
``system_id_min`` (2**62), which is reserved for derived system transfers.
Time-ordered ids keep B-tree inserts local; the random tag spreads
generators in different processes apart.
"""

from __future__ import annotations

import secrets
import threading
import time

from micropay.core import limits

_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_COUNTER_BITS = 12
_TAG_BITS = 9


class IdGenerator:
    def __init__(self, tag: int | None = None) -> None:
        self._tag = secrets.randbelow(1 << _TAG_BITS) if tag is None else tag % (1 << _TAG_BITS)
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self) -> int:
        with self._lock:
            now_ms = max(time.time_ns() // 1_000_000 - _EPOCH_MS, self._last_ms)
            if now_ms == self._last_ms:
                self._counter += 1
                if self._counter >> _COUNTER_BITS:
                    now_ms += 1  # borrow from the next millisecond; stays monotonic
                    self._counter = 0
            else:
                self._counter = 0
            self._last_ms = now_ms
            value = (
                (now_ms << (_TAG_BITS + _COUNTER_BITS))
                | (self._tag << _COUNTER_BITS)
                | self._counter
            )
        if not limits.id_min <= value < limits.system_id_min:
            raise OverflowError("id generator ran past its 62-bit range")
        return value
