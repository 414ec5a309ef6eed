"""Run localstripe (a fake, stateful Stripe server) on 127.0.0.1 for the adapter tests.

``running_localstripe()`` starts this file as a child process, which binds a free
loopback port, prints it, and serves localstripe's aiohttp app there; the parent
waits until the server answers an authenticated request, yields its base URL,
and kills the child at the end (bounded waits everywhere).

localstripe 1.15 lacks three behaviours of the real API that the adapter relies
on; the child adds them to localstripe's app before serving, and nothing else:

- **Idempotency keys** (Stripe's documented semantics): a POST with an
  ``Idempotency-Key`` already completed under the same API key replays the
  first status and body (``Idempotent-Replayed: true``); the same key with a
  different request is a 400 ``idempotency_error``; a key whose first request
  is still running is a 409 ``idempotency_error``. 5xx results are not saved.
- **Refund cap**: a refund larger than what is left unrefunded on the charge is
  a 400 ``invalid_request_error`` (``charge_already_refunded`` once nothing is
  left), as the real API answers; localstripe would create it.
- **PaymentIntent ``description``**: accepted and stored (localstripe answers 400
  "Unexpected description").

It also stops localstripe from pickling its store to ``/tmp/localstripe.pickle``
on every write (shared between processes, and slow); each server starts empty.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

start_timeout_s = 20.0
stop_timeout_s = 5.0
TEST_API_KEY = "sk_test_micropay_localstripe"


@contextlib.contextmanager
def running_localstripe() -> Iterator[str]:
    """Start localstripe on a free loopback port; yield ``http://127.0.0.1:PORT``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        base_url = _wait_until_serving(proc)
        yield base_url
    finally:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=stop_timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_until_serving(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + start_timeout_s
    line = _readline_before(proc, deadline)
    port = int(line.strip())
    base_url = f"http://127.0.0.1:{port}"
    request = urllib.request.Request(
        f"{base_url}/v1/customers?limit=1",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
    )
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"localstripe exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=1.0) as response:
                if response.status == 200:
                    return base_url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)  # polling a server that is starting: there is no event to wait on
    raise RuntimeError("localstripe did not answer in time")


def _readline_before(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not selector.select(timeout=remaining):
            raise RuntimeError("localstripe did not report its port in time")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("localstripe exited before reporting its port")
    return line


# --- the child process ------------------------------------------------------------


def _serve() -> None:
    from aiohttp import web
    from localstripe import resources, server
    from localstripe.errors import UserError

    resources.Store.dump_to_disk = lambda self: None
    _add_refund_cap(resources, UserError)
    _accept_payment_intent_description(resources)
    server.app.middlewares.insert(0, _idempotency_middleware(web))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    web.run_app(server.app, sock=sock, print=None, access_log=None)


def _add_refund_cap(resources: Any, user_error: Any) -> None:
    original_init = resources.Refund.__init__

    def init(
        self: Any, charge: Any = None, payment_intent: Any = None, amount: Any = None, **kwargs: Any
    ) -> None:
        charge_obj = None
        if isinstance(payment_intent, str) and payment_intent.startswith("pi_"):
            intent = resources.PaymentIntent._api_retrieve(payment_intent)
            charge_obj = intent.latest_charge
        elif isinstance(charge, str) and charge.startswith("ch_"):
            charge_obj = resources.Charge._api_retrieve(charge)
        if charge_obj is not None and charge_obj.status == "succeeded":
            left = charge_obj.amount - charge_obj.amount_refunded
            wanted = left if amount is None else resources.try_convert_to_int(amount)
            if left <= 0:
                raise user_error(
                    400, "Charge has already been refunded.", {"code": "charge_already_refunded"}
                )
            if isinstance(wanted, int) and wanted > left:
                raise user_error(
                    400,
                    "Refund amount is greater than unrefunded amount on charge.",
                    {"param": "amount"},
                )
        original_init(self, charge=charge, payment_intent=payment_intent, amount=amount, **kwargs)

    resources.Refund.__init__ = init


def _accept_payment_intent_description(resources: Any) -> None:
    original_init = resources.PaymentIntent.__init__

    def init(self: Any, description: Any = None, **kwargs: Any) -> None:
        original_init(self, **kwargs)
        self.description = description

    resources.PaymentIntent.__init__ = init


def _idempotency_middleware(web: Any) -> Any:
    in_progress = object()
    results: dict[tuple[str, str], Any] = {}

    def error(status: int, message: str) -> Any:
        body = {"error": {"type": "idempotency_error", "message": message}}
        return web.json_response(body, status=status)

    async def middleware(request: Any, handler: Any) -> Any:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return await handler(request)
        scope = (request.headers.get("Authorization", ""), key)
        fingerprint = (request.path, await request.read())
        saved = results.get(scope)
        if saved is in_progress:
            return error(409, "There is currently another in-progress request using this key.")
        if saved is not None:
            saved_fingerprint, status, body = saved
            if saved_fingerprint != fingerprint:
                return error(
                    400,
                    "Keys for idempotent requests can only be used with the "
                    "same parameters they were first used with.",
                )
            return web.Response(
                body=body,
                status=status,
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        results[scope] = in_progress
        try:
            response = await handler(request)
        except BaseException:
            del results[scope]
            raise
        if response.status >= 500 or not isinstance(response.body, bytes):
            del results[scope]
        else:
            results[scope] = (fingerprint, response.status, response.body)
        return response

    return web.middleware(middleware)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
