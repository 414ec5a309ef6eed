"""The load generator of ``micropay bench api``: asyncio processes over HTTP/1.1 keep-alive.

Each generator process holds its share of the connections and its own slice
of the customers, and runs the phases the orchestrator sends it over a pipe.
A connection is a plain asyncio protocol that writes each request's bytes and
parses the answer with ``httptools`` (the parser uvicorn uses): measured on
``/healthz``, an httpx client spent about 1 ms of CPU a request, twice what
the server spent answering, so the generator, not the server, set the
ceiling. This client costs a small fraction of that, and the same client
drives purchases and the health check, so their ratio stays fair.

- closed loop: every connection sends its next request as soon as the last
  answered, until the phase ends; the rate is what completed in the window;
- open loop: requests are due on a fixed schedule (``rate`` a second, evenly
  spaced) whatever the server does; latency is measured from the *scheduled*
  send time, so a request that waits for a free connection counts its wait
  (no coordinated omission).

A purchase is a wallet-funded purchase of a 0.10 USD item with a fresh
Idempotency-Key, by a customer drawn uniformly from the process's slice. A
customer buys its merchant's articles in turn (``article-000``, ``-001``, ...),
so it never asks for one it still owns (which would answer 200
``already_entitled`` and charge nothing).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

import httptools

PURCHASE_PATH = "/v1/purchases"
HEALTH_PATH = "/healthz"
_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class BenchCustomer:
    public_id: str
    key: str  # the secret key of the customer's merchant that the generator uses
    hot: bool


@dataclass(frozen=True, slots=True)
class Phase:
    kind: str  # "purchase" | "healthz"
    duration_s: float
    rate: float | None = None  # None: closed loop; else requests/s for this process


@dataclass
class PhaseResult:
    in_window: int = 0  # 2xx answers completed before the phase's end
    statuses: Counter[str] = field(default_factory=Counter)  # every answer, by status
    latencies_s: list[float] = field(default_factory=list)  # 2xx answers in the window
    sent: int = 0
    hot: int = 0  # requests sent to the hot merchant
    cpu_s: float = 0.0
    wall_s: float = 0.0


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, answers parsed by httptools."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.open = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(exc or ConnectionResetError("connection closed"))

    # httptools callbacks
    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    def _fail(self, error: BaseException) -> None:
        self.open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    async def send(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        async with asyncio.timeout(_TIMEOUT_S):
            return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Generator:
    def __init__(
        self,
        host: str,
        port: int,
        connections: int,
        customers: list[BenchCustomer],
        items: list[str],
    ) -> None:
        self.host, self.port = host, port
        self.connections = connections
        self.customers = customers
        self.items = items
        self.bought = [0] * len(customers)
        self.rng = random.Random(len(customers) * 7919 + connections)
        self.serial = 0
        self.run_tag = f"{random.SystemRandom().getrandbits(64):016x}"
        self.healthz = f"GET {HEALTH_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    def request(self, kind: str, result: PhaseResult) -> bytes:
        if kind == "healthz":
            return self.healthz
        index = self.rng.randrange(len(self.customers))
        customer = self.customers[index]
        result.hot += customer.hot
        item = self.items[self.bought[index] % len(self.items)]
        self.bought[index] += 1
        self.serial += 1
        body = json.dumps({"customer": customer.public_id, "item": item})
        return (
            f"POST {PURCHASE_PATH} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {customer.key}\r\n"
            f"Idempotency-Key: bench-{self.run_tag}-{self.serial}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Connection, self.host, self.port)
        return protocol

    async def run(self, phase: Phase) -> PhaseResult:
        result = PhaseResult()
        links = [await self.connect() for _ in range(self.connections)]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            if phase.rate is None:
                await self._closed(links, phase, result)
            else:
                await self._open(links, phase, phase.rate, result)
        finally:
            result.cpu_s = time.process_time() - cpu0
            result.wall_s = time.perf_counter() - wall0
            for link in links:
                link.close()
        return result

    async def _send(
        self,
        links: list[_Connection],
        slot: int,
        kind: str,
        due: float,
        end: float,
        result: PhaseResult,
    ) -> None:
        raw = self.request(kind, result)
        result.sent += 1
        try:
            if not links[slot].open:
                links[slot].close()
                links[slot] = await self.connect()
            status = str(await links[slot].send(raw))
        except (OSError, TimeoutError, httptools.HttpParserError) as error:
            status = type(error).__name__
            links[slot].open = False
        done = time.perf_counter()
        result.statuses[status] += 1
        if status.startswith("2") and done <= end:
            result.in_window += 1
            result.latencies_s.append(done - due)

    async def _closed(self, links: list[_Connection], phase: Phase, result: PhaseResult) -> None:
        end = time.perf_counter() + phase.duration_s

        async def connection(slot: int) -> None:
            while (started := time.perf_counter()) < end:
                await self._send(links, slot, phase.kind, started, end, result)

        await asyncio.gather(*(connection(i) for i in range(len(links))))

    async def _open(
        self, links: list[_Connection], phase: Phase, rate: float, result: PhaseResult
    ) -> None:
        start = time.perf_counter() + 0.05
        due_times: asyncio.Queue[float | None] = asyncio.Queue()
        total = max(1, int(phase.duration_s * rate))
        end = start + phase.duration_s
        # Answers to requests due near the end may land after it: they count.
        grace_end = end + _TIMEOUT_S

        async def schedule() -> None:
            for k in range(total):
                due = start + k / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                due_times.put_nowait(due)
            for _ in links:
                due_times.put_nowait(None)

        async def connection(slot: int) -> None:
            while (due := await due_times.get()) is not None:
                await self._send(links, slot, phase.kind, due, grace_end, result)

        await asyncio.gather(schedule(), *(connection(i) for i in range(len(links))))


def generator_main(
    pipe: Connection,
    host: str,
    port: int,
    connections: int,
    customers: list[BenchCustomer],
    items: list[str],
) -> None:
    """A generator process: run each phase received on ``pipe``; ``None`` ends it."""
    run: Any = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard] on POSIX
        pass
    generator = _Generator(host, port, connections, customers, items)
    pipe.send("ready")
    while True:
        phase: Any = pipe.recv()
        if phase is None:
            return
        pipe.send(run(generator.run(phase)))
