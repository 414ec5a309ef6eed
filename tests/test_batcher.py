"""Group commit for API requests (``micropay.api.batcher``), on both stores.

Requests queued while a commit runs share the next one; each request's answer
reaches its own caller; a request that fails "clean" (before writing) fails
alone inside a committed batch; any other failure rolls its batch back and
every other request of that batch still commits, once; a transient store error
re-runs the batch and nothing is written twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from micropay.api.batcher import WriteBatcher
from micropay.service.ports import TransientStoreError
from micropay.service.retry import run_with_retries
from micropay.store import open_store


class Refused(Exception):
    """A request's clean refusal: raised before it writes anything."""


def _batcher(database_url: str) -> tuple[WriteBatcher, Callable[[], list[str]], Callable[[], None]]:
    writer = open_store(database_url)
    reader = open_store(database_url)

    def run_tx(operation: Callable[[Any], Any]) -> Any:
        def once() -> Any:
            with writer.write() as tx:
                return operation(tx)

        return run_with_retries(once)

    def rows() -> list[str]:
        with reader.read() as tx:
            found = tx._cur.execute("SELECT idempotency_key FROM api_idempotency") or tx._cur
            return sorted(str(r[0]) for r in found.fetchall())

    def close() -> None:
        batcher.close()
        writer.close()
        reader.close()

    batcher = WriteBatcher(run_tx, clean=(Refused,))
    return batcher, rows, close


def _write(key: str) -> Callable[[Any], str]:
    def fn(tx: Any) -> str:
        tx.insert_idempotency_done("owner", key, "fp", 200, b"{}", 1)
        return key

    return fn


def test_queued_requests_share_commits_and_each_gets_its_answer(database_url: str) -> None:
    batcher, rows, close = _batcher(database_url)
    gate = threading.Event()

    def first(tx: Any) -> str:
        gate.wait(10)  # hold the writer while the others queue up
        return _write("k-first")(tx)

    async def main() -> list[str]:
        head = asyncio.ensure_future(batcher.run(first))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.run(_write(f"k-{i:02d}"))) for i in range(40)]
        await asyncio.sleep(0.05)
        gate.set()
        return [await head, *[await r for r in rest]]

    try:
        answers = asyncio.run(main())
        assert answers == ["k-first", *[f"k-{i:02d}" for i in range(40)]]
        assert rows() == sorted(answers)
        assert batcher.requests == 41
        # The first commit carried one request; the 40 queued behind it shared few.
        assert batcher.batches <= 3, batcher.batches
    finally:
        close()


def test_a_clean_refusal_fails_alone_inside_a_committed_batch(database_url: str) -> None:
    batcher, rows, close = _batcher(database_url)

    def refuse(_tx: Any) -> str:
        raise Refused("no")

    async def main() -> list[object]:
        calls = [batcher.run(_write("a")), batcher.run(refuse), batcher.run(_write("b"))]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    try:
        a, refused, b = asyncio.run(main())
        assert (a, b) == ("a", "b")
        assert isinstance(refused, Refused)
        assert rows() == ["a", "b"]
    finally:
        close()


def test_a_failure_after_writing_rolls_back_only_its_own_writes(database_url: str) -> None:
    batcher, rows, close = _batcher(database_url)
    gate = threading.Event()

    def hold(tx: Any) -> str:
        gate.wait(10)
        return _write("held")(tx)

    def broken(tx: Any) -> str:
        _write("broken")(tx)
        raise RuntimeError("a bug after a write")

    async def main() -> list[object]:
        head = asyncio.ensure_future(batcher.run(hold))
        await asyncio.sleep(0.05)
        rest = [
            asyncio.ensure_future(batcher.run(fn))
            for fn in (_write("x"), broken, _write("y"), _write("z"))
        ]
        await asyncio.sleep(0.05)
        gate.set()
        done = await asyncio.gather(head, *rest, return_exceptions=True)
        return list(done)

    try:
        held, x, failed, y, z = asyncio.run(main())
        assert (held, x, y, z) == ("held", "x", "y", "z")
        assert isinstance(failed, RuntimeError)
        assert rows() == ["held", "x", "y", "z"]  # "broken" never committed
    finally:
        close()


def test_a_transient_error_reruns_the_batch_and_writes_once(database_url: str) -> None:
    batcher, rows, close = _batcher(database_url)
    attempts = [0]

    def flaky(tx: Any) -> str:
        attempts[0] += 1
        _write("flaky")(tx)
        if attempts[0] == 1:
            raise TransientStoreError("serialization failure (simulated)")
        return "flaky"

    async def main() -> list[str]:
        return list(await asyncio.gather(batcher.run(_write("p")), batcher.run(flaky)))

    try:
        assert asyncio.run(main()) == ["p", "flaky"]
        assert attempts[0] == 2
        assert rows() == ["flaky", "p"]
    finally:
        close()


def test_close_finishes_queued_work_and_then_refuses(database_url: str) -> None:
    batcher, rows, close = _batcher(database_url)

    async def main() -> str:
        return await batcher.run(_write("last"))

    try:
        assert asyncio.run(main()) == "last"
        batcher.close()
        with pytest.raises(RuntimeError, match="closed"):
            asyncio.run(main())
        assert rows() == ["last"]
    finally:
        close()
