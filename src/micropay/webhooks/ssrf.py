"""Server-side request forgery checks for webhook endpoint URLs.

An endpoint URL is checked when it is registered AND again before every
delivery (DNS answers can change between the two). The host is resolved and
EVERY address it resolves to must be a public unicast address: loopback,
private, link-local (169.254.169.254, the cloud metadata service), multicast,
reserved, unspecified, shared (100.64/10) and IPv4-mapped/-translated forms of
those are refused. Live-mode endpoints must use https. Test-mode endpoints may
be allowed to reach loopback and private addresses (a receiver on 127.0.0.1 in
tests) only through an explicit switch; live mode never may, and link-local
(metadata), multicast, reserved and unspecified addresses stay refused even then.

The delivery then connects to the address that passed the check (not a fresh
resolution), so a DNS answer cannot change between check and connect.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

url_chars_max = 2_048
addresses_max = 16
# What the test-mode switch may open: a receiver on this machine or the local network.
# Never link-local (the cloud metadata service), multicast, reserved or unspecified.
test_allowable = frozenset({"loopback", "private"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]


class UrlRefusal(enum.Enum):
    url_invalid = "url_invalid"
    scheme_not_allowed = "scheme_not_allowed"  # https only in live mode
    credentials_in_url = "credentials_in_url"
    host_unresolvable = "host_unresolvable"
    address_not_allowed = "address_not_allowed"


@dataclass(frozen=True, slots=True)
class UrlCheck:
    refusal: UrlRefusal | None
    message: str = ""
    scheme: str = ""
    host: str = ""
    port: int = 0
    target: str = ""  # path and query
    addresses: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.refusal is None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` must not be reached from the server, or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            inner = address_refusal(embedded)
            return f"embeds {embedded}: {inner}" if inner else None
        if address in ipaddress.ip_network("64:ff9b::/96"):  # NAT64: the IPv4 is the target
            inner_v4 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            inner = address_refusal(inner_v4)
            return f"embeds {inner_v4}: {inner}" if inner else None
    for name in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    if not address.is_global:
        return "not global"
    return None


def check_url(
    url: object,
    *,
    live: bool,
    allow_private: bool = False,
    resolver: Resolver = system_resolver,
) -> UrlCheck:
    """Check a webhook URL; ``allow_private`` is honoured in test mode only."""
    if not isinstance(url, str) or not 0 < len(url) <= url_chars_max or not url.isascii():
        return UrlCheck(UrlRefusal.url_invalid, "a URL of 1-2048 ASCII characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        return UrlCheck(UrlRefusal.url_invalid, "no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return UrlCheck(UrlRefusal.url_invalid, str(error))
    scheme = parts.scheme.lower()
    allowed = ("https",) if live else ("https", "http")
    if scheme not in allowed:
        return UrlCheck(UrlRefusal.scheme_not_allowed, f"scheme must be {' or '.join(allowed)}")
    if parts.username is not None or parts.password is not None:
        return UrlCheck(UrlRefusal.credentials_in_url, "no user or password in the URL")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return UrlCheck(UrlRefusal.url_invalid, "the URL has no host")
    port = port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        raw = [str(literal)]
    else:
        try:
            raw = list(resolver(host, port))[:addresses_max]
        except (OSError, UnicodeError) as error:
            return UrlCheck(UrlRefusal.host_unresolvable, f"{host}: {error}")
        if not raw:
            return UrlCheck(UrlRefusal.host_unresolvable, f"{host} has no address")
    addresses = []
    for text in raw:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            return UrlCheck(UrlRefusal.address_not_allowed, f"{host} resolves to {text!r}")
        reason = address_refusal(address)
        if reason is not None and (live or not allow_private or reason not in test_allowable):
            return UrlCheck(
                UrlRefusal.address_not_allowed, f"{host} resolves to {address} ({reason})"
            )
        addresses.append(str(address))
    return UrlCheck(None, "", scheme, host, port, target, tuple(addresses))
