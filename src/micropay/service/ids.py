"""Transfer and account ids: positive 62-bit integers, roughly time-ordered.

Layout: milliseconds since 2025-01-01 (41 bits) | a per-process random tag
(9 bits) | a counter within the millisecond (12 bits). Ids stay below
``system_id_min`` (2**62), which is reserved for derived system transfers.

Every generator in a process shares one sequence, so ids never repeat within a
process. Two processes collide only if they draw the same tag in the same
millisecond at the same counter; the insert then fails on the primary key and
the store reports it as transient, so the operation is retried with fresh ids.
Time-ordered ids keep B-tree inserts local.
"""

from __future__ import annotations

import secrets
import threading
import time

from micropay.core import limits

_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_COUNTER_BITS = 12
_TAG_BITS = 9


class _Sequence:
    def __init__(self, tag: int) -> None:
        self.tag = tag % (1 << _TAG_BITS)
        self.lock = threading.Lock()
        self.last_ms = 0
        self.counter = 0

    def next(self) -> int:
        with self.lock:
            now_ms = max(time.time_ns() // 1_000_000 - _EPOCH_MS, self.last_ms)
            if now_ms == self.last_ms:
                self.counter += 1
                if self.counter >> _COUNTER_BITS:
                    now_ms += 1  # borrow from the next millisecond; stays monotonic
                    self.counter = 0
            else:
                self.counter = 0
            self.last_ms = now_ms
            value = (
                (now_ms << (_TAG_BITS + _COUNTER_BITS)) | (self.tag << _COUNTER_BITS) | self.counter
            )
        if not limits.id_min <= value < limits.system_id_min:
            raise OverflowError("id generator ran past its 62-bit range")
        return value


_PROCESS_SEQUENCE = _Sequence(secrets.randbelow(1 << _TAG_BITS))


class IdGenerator:
    """Callable id source; all default instances in a process share one sequence."""

    def __init__(self, tag: int | None = None) -> None:
        self._sequence = _PROCESS_SEQUENCE if tag is None else _Sequence(tag)

    def __call__(self) -> int:
        return self._sequence.next()
