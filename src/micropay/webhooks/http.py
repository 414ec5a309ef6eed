"""One bounded HTTP POST to an address that passed the SSRF check.

The connection goes to the checked address (TLS still verifies the host name
through SNI and the certificate), redirects are not followed, every socket
operation has a timeout and a watchdog closes the socket at the overall
deadline (a receiver trickling bytes cannot hold a dispatcher). At most
``response_bytes_max`` of the answer are read; the body is never stored.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from micropay.webhooks.ssrf import UrlCheck

connect_timeout_s_default = 5.0
total_timeout_s_default = 15.0
response_bytes_max_default = 64 * 1024
error_chars_max = 500


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int | None  # None: no HTTP answer
    error: str
    latency_us: int


class _Pinned(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTls(http.client.HTTPSConnection):
    def __init__(
        self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.host)


def post(
    check: UrlCheck,
    headers: dict[str, str],
    body: bytes,
    *,
    connect_timeout_s: float = connect_timeout_s_default,
    total_timeout_s: float = total_timeout_s_default,
    response_bytes_max: int = response_bytes_max_default,
    tls_context: ssl.SSLContext | None = None,
) -> HttpResult:
    assert check.ok
    assert check.addresses
    started = time.monotonic()
    conn: http.client.HTTPConnection
    if check.scheme == "https":
        conn = _PinnedTls(
            check.host,
            check.port,
            check.addresses[0],
            connect_timeout_s,
            tls_context or ssl.create_default_context(),
        )
    else:
        conn = _Pinned(check.host, check.port, check.addresses[0], connect_timeout_s)
    expired = threading.Event()

    def watchdog() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(total_timeout_s, watchdog)
    timer.daemon = True
    timer.start()
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(max(0.001, total_timeout_s - (time.monotonic() - started)))
        conn.request(
            "POST",
            check.target,
            body=body,
            headers={
                **headers,
                "content-type": "application/json",
                "user-agent": "micropay-webhooks/1",
            },
        )
        response = conn.getresponse()
        response.read(response_bytes_max)  # bounded; the rest is dropped with the connection
        status: int | None = response.status
        error = ""
    except (OSError, http.client.HTTPException, ValueError) as failure:
        status = None
        error = f"{type(failure).__name__}: {failure}"
        if expired.is_set():
            error = f"timed out after {total_timeout_s:g} s ({error})"
    finally:
        timer.cancel()
        conn.close()
    latency_us = int((time.monotonic() - started) * 1_000_000)
    return HttpResult(status, error[:error_chars_max], latency_us)
