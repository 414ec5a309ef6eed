"""A client that writes batches of transfers with a durable log, until it is killed.

Run as a subprocess by ``test_crash.py`` and ``test_crash_pg_server.py``::

    python tests/crash_writer.py '{"url": ..., "log": ..., "seed": 1, "first_id": 10,
                                   "customers": [...], "merchants": [...]}'

For every batch it appends ``invoke <id> <request json>`` for each transfer
and fsyncs the log BEFORE submitting; after the ledger answers it appends
``ok <id>`` or ``fail <id> <status>``. It prints ``started`` once its store is
open, and stops by itself after ``seconds_max`` (the test kills it long
before).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from dataclasses import asdict

from micropay.core.transfers import Transfer, TransferFlags
from micropay.service.ledger import Ledger
from micropay.store import open_store

BATCH_TRANSFERS_MAX = 40
SECONDS_MAX = 30.0


def request_json(t: Transfer) -> str:
    return json.dumps(asdict(t), separators=(",", ":"), sort_keys=True)


def make_batch(
    rng: random.Random, first_id: int, source: int, customers: list[int], merchants: list[int]
) -> list[Transfer]:
    size = rng.randint(1, BATCH_TRANSFERS_MAX)
    batch = []
    for i in range(size):
        amount = rng.randint(1, 50) * 1_000
        if rng.random() < 0.25:  # a top-up keeps the wallets spending
            batch.append(Transfer(first_id + i, source, rng.choice(customers), amount * 4, "USD"))
            continue
        # One in ten is a two-transfer linked chain (purchase + platform fee).
        linked = i + 1 < size and rng.random() < 0.1 and not (batch and batch[-1].flags)
        flags = int(TransferFlags.LINKED) if linked else 0
        batch.append(
            Transfer(
                first_id + i,
                rng.choice(customers),
                rng.choice(merchants),
                amount,
                "USD",
                flags=flags,
            )
        )
    return batch  # the last transfer is never LINKED: every chain is closed


def main(config: dict[str, object]) -> None:
    url = str(config["url"])
    customers = [int(c) for c in config["customers"]]  # type: ignore[attr-defined]
    merchants = [int(m) for m in config["merchants"]]  # type: ignore[attr-defined]
    rng = random.Random(int(config["seed"]))  # type: ignore[arg-type]
    next_id = int(config["first_id"])  # type: ignore[arg-type]
    source = int(config["source"])  # type: ignore[arg-type]
    # Fault injection: die by SIGKILL right after this many batches committed, before
    # logging their acknowledgements (the "committed but unknown to the client" window).
    kill_self_after = int(config.get("kill_self_after_batches", 0))  # type: ignore[arg-type]
    batches = 0
    ledger = Ledger(open_store(url))
    fd = os.open(str(config["log"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("started", flush=True)
    deadline = time.monotonic() + SECONDS_MAX
    while time.monotonic() < deadline:
        batch = make_batch(rng, next_id, source, customers, merchants)
        next_id += len(batch)
        os.write(fd, "".join(f"invoke {t.id} {request_json(t)}\n" for t in batch).encode())
        os.fsync(fd)
        results = ledger.submit(batch)
        batches += 1
        if batches == kill_self_after:
            os.kill(os.getpid(), signal.SIGKILL)
        lines = [
            f"ok {t.id}\n" if r.ok else f"fail {t.id} {r.status.value}\n"
            for t, r in zip(batch, results, strict=True)
        ]
        # A kill loses no written bytes (the kernel has them); an unacknowledged
        # request is retried with the same id anyway, so no fsync is needed here.
        os.write(fd, "".join(lines).encode())


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
