"""What the API's endpoints share: a store connection per worker thread, keys, limits.

Endpoints are plain ``def`` functions run in the server's threadpool. Each
thread opens its own store connection on first use (SQLite and psycopg
connections are not shared between threads) and its own :class:`Payments`,
all sharing one id generator, one processor and one entitlement signer.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from micropay.api import keys as api_keys
from micropay.api.batcher import WriteBatcher
from micropay.api.errors import ApiError, envelope
from micropay.payments.tokens import EntitlementSigner
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.ids import IdGenerator
from micropay.service.ledger import Clock, system_clock_us
from micropay.service.payments import Payments
from micropay.service.payouts import Payouts
from micropay.service.ports import PaymentsStore, Processor
from micropay.store import open_store
from micropay.store.api_sql import ApiSql
from micropay.store.sql import as_mixin
from micropay.webhooks.outbox import attach as attach_outbox
from micropay.webhooks.ssrf import Resolver, system_resolver

T = TypeVar("T")
request_bytes_max = 64 * 1024
page_limit_max = 100
page_limit_default = 20
idempotency_in_progress_timeout_s = 60
rate_buckets_max = 100_000
auth_cache_entries_max = 100_000


@dataclass
class ApiConfig:
    database_url: str
    processor: Processor = field(default_factory=SimulatedProcessor)
    signer: EntitlementSigner = field(default_factory=EntitlementSigner.generate)
    clock: Clock = system_clock_us
    # Token bucket per API key, in memory per process: with N server processes a
    # key may spend up to N times this rate. Enough against runaway clients; a
    # shared limiter (Redis, the database) is the next step for strict quotas.
    rate_per_s: float = 100.0
    rate_burst: int = 200
    request_bytes_max: int = request_bytes_max
    worker_threads: int = 40  # each holds one store connection
    # Webhook endpoint URLs: how hosts resolve for the SSRF check, and whether
    # test-mode endpoints may reach loopback/private addresses (never live ones).
    webhook_resolver: Resolver = system_resolver
    webhook_allow_private_in_test: bool = False
    # Record each paid purchase's revenue split (and each refund's reversal) in the
    # purchase's own transaction (micropay.service.payouts). Off: no split is recorded.
    record_splits: bool = False
    # The processor's mode (micropay.processors.config): keys of the other mode are
    # refused (mode_mismatch), so live data never meets a test or simulated processor
    # and test data never charges real cards. None: no check (tests, embedding).
    processor_mode: str | None = None
    # How long a key that authenticated is trusted without a database read. A key
    # revoked through this process is refused at once; through another process
    # (the CLI, another server), within this time. 0: read the key every request.
    auth_cache_s: float = 1.0


def api_tx(tx: Any) -> ApiSql:
    """The API's SQL over a store transaction (bound to its cursor if not mixed in yet)."""
    return as_mixin(tx, ApiSql)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # secret | publishable | operator
    mode: str
    lookup: str
    merchant_id: int | None

    @property
    def merchant(self) -> int:
        """The key's merchant (merchant keys only: the routes' dependencies check the kind)."""
        if self.merchant_id is None:
            raise ApiError("key_scope_insufficient", "this endpoint needs a merchant key")
        return self.merchant_id

    @property
    def owner(self) -> str:
        return f"m:{self.merchant_id}" if self.merchant_id is not None else "operator"


class RateLimiter:
    """Token buckets per key: ``burst`` requests at once, refilled at ``rate_per_s``."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """0 if allowed, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) >= rate_buckets_max:
                self._buckets.clear()  # bounded memory; a cleared bucket starts full
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate_per_s


class Runtime:
    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self.new_id = IdGenerator()
        self.limiter = RateLimiter(config.rate_per_s, config.rate_burst)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[PaymentsStore] = []
        self._generation = 0  # bumped by close(): threads then open fresh connections
        # sha256(Authorization header) -> (valid until, monotonic s; principal)
        self._auth_cache: dict[bytes, tuple[float, Principal]] = {}
        self.batcher = self._new_batcher()

    def _new_batcher(self) -> WriteBatcher:
        # A request raises these before writing anything (see _in_one_tx).
        return WriteBatcher(self.write, clean=(ApiError, _NeedsGeneralPath))

    def payments(self) -> Payments:
        found = getattr(self._local, "payments", None)
        if found is not None and self._local.generation == self._generation:
            return cast(Payments, found)
        store = cast(PaymentsStore, open_store(self.config.database_url))
        with self._lock:
            self._opened.append(store)
        made = Payments(
            store,
            self.config.processor,
            clock=self.config.clock,
            new_id=self.new_id,
            signer=self.config.signer,
        )
        attach_outbox(made)  # events commit with the changes that cause them
        if self.config.record_splits:
            Payouts(made, attach=True)  # splits commit with the sales that earn them
        self._local.payments = made
        self._local.generation = self._generation
        return made

    def write(self, operation: Callable[[Any], T]) -> T:
        """One write transaction, retried on transient errors."""
        return self.payments().charges.tx(operation)

    def read(self, operation: Callable[[Any], T]) -> T:
        with self.payments().store.read() as tx:
            return operation(tx)

    def close(self) -> None:
        self.batcher.close()
        self.batcher = self._new_batcher()  # a runtime used again starts a new writer
        with self._lock:
            opened, self._opened = self._opened, []
            self._generation += 1
        for store in opened:
            store.close()

    # --- authentication --------------------------------------------------------

    def authenticate_cached(self, authorization: str | None) -> Principal | None:
        """The principal of a key that authenticated within ``auth_cache_s``, else ``None``.

        No database read: the caller falls back to :meth:`authenticate`. The
        rate limit applies on every call. A key revoked through this process
        is forgotten at once; one revoked elsewhere (the CLI, another server
        process) is refused within ``auth_cache_s``.
        """
        if not authorization or self.config.auth_cache_s <= 0:
            return None
        digest = hashlib.sha256(authorization.encode()).digest()
        found = self._auth_cache.get(digest)
        if found is None or found[0] < time.monotonic():
            return None
        self._rate_limit(found[1].lookup)
        return found[1]

    def forget_keys(self) -> None:
        """Drop every cached authentication (after a key is revoked)."""
        self._auth_cache = {}

    def _remember(self, authorization: str, principal: Principal) -> None:
        if self.config.auth_cache_s <= 0:
            return
        if len(self._auth_cache) >= auth_cache_entries_max:
            self._auth_cache = {}
        digest = hashlib.sha256(authorization.encode()).digest()
        self._auth_cache[digest] = (time.monotonic() + self.config.auth_cache_s, principal)

    def _rate_limit(self, lookup: str) -> None:
        wait_s = self.limiter.take(lookup)
        if wait_s > 0:
            raise ApiError(
                "rate_limited",
                "too many requests for this key",
                headers={"Retry-After": str(max(1, int(wait_s + 0.999)))},
            )

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise ApiError("authentication_required", "send Authorization: Bearer <api key>")
        scheme, _, token = authorization.partition(" ")
        parsed = api_keys.parse(token.strip()) if scheme.lower() == "bearer" else None
        if parsed is None:
            raise ApiError("api_key_invalid", "the API key is not valid")

        def load(tx: Any) -> tuple[Any, str | None]:
            sql = api_tx(tx)
            row = sql.get_api_key(parsed.lookup)
            mode = sql.api_merchant_mode(row.merchant_id) if row and row.merchant_id else None
            return row, mode

        row, merchant_mode = self.read(load)
        if row is None or not api_keys.matches(token.strip(), row.secret_sha256):
            raise ApiError("api_key_invalid", "the API key is not valid")
        if row.revoked_at_us is not None:
            raise ApiError("api_key_revoked", "this API key was revoked")
        if row.kind != "operator" and merchant_mode != row.mode:
            raise ApiError("mode_mismatch", "this key's mode does not match its merchant's data")
        served = self.config.processor_mode
        if served is not None and row.mode != served:
            raise ApiError(
                "mode_mismatch", f"this server's processor is in {served} mode: use a {served} key"
            )
        self._rate_limit(row.lookup)
        principal = Principal(row.kind, row.mode, row.lookup, row.merchant_id)
        self._remember(authorization, principal)
        return principal

    # --- idempotency -----------------------------------------------------------

    def idempotent(
        self,
        principal: Principal,
        key: str,
        fingerprint: str,
        handler: Callable[[], tuple[int, bytes, bytes]],
        request_id: str,
    ) -> tuple[int, bytes, bool]:
        """Run ``handler`` once per (owner, key): (status, body, replayed).

        Same key, same request: the stored answer, byte for byte. Same key,
        another request: 409. Still running: 409. A request that died mid-way
        leaves an ``in_progress`` row, taken over after the timeout.

        ``handler`` returns (status, body, body to store for replays): the two
        bodies differ only where the answer holds a new API key, which is shown
        once and never stored (a replay shows ``"token": null``).
        """
        owner = principal.owner
        now_us = self.config.clock()
        prior = self.write(lambda tx: _start_idempotency(tx, owner, key, fingerprint, now_us))
        if prior is not None:
            return prior[0], prior[1], True
        try:
            status, body, stored = handler()
        except ApiError as error:
            status, body = error.status, envelope(error.code, error.message, request_id)
            stored = body
        except BaseException:
            self.write(lambda tx: api_tx(tx).abandon_idempotency(owner, key))
            raise
        if status >= 500:
            self.write(lambda tx: api_tx(tx).abandon_idempotency(owner, key))
        else:
            self.write(lambda tx: api_tx(tx).finish_idempotency(owner, key, status, stored))
        return status, body, False

    async def idempotent_batched(
        self,
        principal: Principal,
        key: str,
        fingerprint: str,
        handler: Callable[[Any], tuple[int, bytes] | None],
        request_id: str,
    ) -> tuple[int, bytes, bool] | None:
        """``idempotent`` for a request that can complete inside one write transaction.

        The key's row is checked, ``handler(tx)`` runs and the answer is
        stored, all in one transaction, which the group commit shares with
        the requests queued at the same time (:mod:`micropay.api.batcher`);
        awaited on the event loop. ``handler`` returns ``None`` when the
        request needs work outside a transaction (a processor call); then
        nothing is committed and this returns ``None``: the caller takes
        :meth:`idempotent`. An ``ApiError`` from ``handler`` is the answer,
        stored like any other. ``handler`` may run more than once (a retried
        batch) and, when it returns ``None`` or raises ``ApiError``, must have
        written nothing before deciding so.
        """
        try:
            return await self.batcher.run(
                self._in_one_tx(principal, key, fingerprint, handler, request_id)
            )
        except _NeedsGeneralPath:
            return None

    def _in_one_tx(
        self,
        principal: Principal,
        key: str,
        fingerprint: str,
        handler: Callable[[Any], tuple[int, bytes] | None],
        request_id: str,
    ) -> Callable[[Any], tuple[int, bytes, bool]]:
        owner = principal.owner

        def run(tx: Any) -> tuple[int, bytes, bool]:
            now_us = self.config.clock()
            sql = api_tx(tx)
            row = sql.get_idempotency(owner, key)
            if row is not None:
                # Taken: the stored answer, a 409, or a stale row to take over,
                # exactly as the general path decides.
                prior = _start_idempotency(tx, owner, key, fingerprint, now_us)
                if prior is not None:
                    return prior[0], prior[1], True
                sql.abandon_idempotency(owner, key)  # taken over: stored again below
            try:
                answer = handler(tx)
            except ApiError as error:
                answer = error.status, envelope(error.code, error.message, request_id)
            if answer is None:
                raise _NeedsGeneralPath
            # The row is written with its answer: nobody sees this key before
            # the transaction commits, so an in-progress row would be invisible
            # anyway. A concurrent request with the same key waits on the
            # unique index, fails after this commits, and its retry replays.
            sql.insert_idempotency_done(owner, key, fingerprint, answer[0], answer[1], now_us)
            return answer[0], answer[1], False

        return run


class _NeedsGeneralPath(Exception):
    """Internal: roll the one-transaction attempt back and take the general path."""


def _start_idempotency(
    tx: Any, owner: str, key: str, fingerprint: str, now_us: int
) -> tuple[int, bytes] | None:
    """Claim (owner, key) for this request; the stored answer if it already has one.

    Same key, another request: 409. Still running: 409, unless the row is
    older than ``idempotency_in_progress_timeout_s`` (its request died): then
    this request takes it over.
    """
    sql = api_tx(tx)
    row = sql.get_idempotency(owner, key)
    if row is None:
        sql.start_idempotency(owner, key, fingerprint, now_us)
        return None
    if row.fingerprint != fingerprint:
        raise ApiError("idempotency_key_reused", "this key was used for another request")
    if row.state == "done":
        return row.status_code, row.body
    stale_before_us = now_us - idempotency_in_progress_timeout_s * 1_000_000
    if sql.restart_idempotency(owner, key, fingerprint, stale_before_us, now_us):
        return None
    raise ApiError("idempotency_request_in_progress", "a request with this key is running")


def merchant_modes(store: Any) -> dict[str, int]:
    """How many merchants the database holds in each mode (``test``/``live``)."""
    with store.read() as tx:
        rows = api_tx(tx)._api_all("SELECT mode, COUNT(*) FROM api_merchants GROUP BY mode", ())
    return {str(mode): int(count) for mode, count in rows}


def other_mode_problem(store: Any, processor_mode: str) -> str | None:
    """Why a worker must not run ``processor_mode``'s processor on this database, if it must not.

    The worker's jobs charge and pay for every merchant: live merchants under a test
    (or simulated) processor would be marked paid without money moving; test merchants
    under a live key would charge real cards.
    """
    others = {mode: n for mode, n in merchant_modes(store).items() if mode != processor_mode}
    if not others:
        return None
    listed = ", ".join(f"{n} {mode}-mode" for mode, n in sorted(others.items()))
    return (
        f"the database holds {listed} merchant(s) but the processor is in {processor_mode}"
        " mode: run one deployment (database, server, worker) per mode"
    )
