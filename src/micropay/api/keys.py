"""API keys: ``mp_<kind>_<mode>_<64 hex>``, shown once, stored as a SHA-256 hash.

The 64 hex digits are 256 random bits from :mod:`secrets`. The first 16 of
them are the key's *lookup* (its public id, shown in listings); the other
192 bits never leave the caller. The prefix (``mp_sk_live_``...) lets secret
scanners recognise a leaked key. A fast hash is right here: the key has far
more entropy than a password, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KINDS = {"sk": "secret", "pk": "publishable", "op": "operator"}
PREFIXES = {v: k for k, v in KINDS.items()}
MODES = ("test", "live")
_RANDOM_HEX = 64
LOOKUP_CHARS = 16
_PATTERN = re.compile(r"^mp_(sk|pk|op)_(test|live)_([0-9a-f]{64})$")
# Anything that looks like a key, for redaction (a little wider than valid keys).
KEY_LIKE = re.compile(r"mp_(?:sk|pk|op)_[A-Za-z0-9_]{4,}")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    kind: str  # secret | publishable | operator
    mode: str  # test | live
    lookup: str


@dataclass(frozen=True, slots=True)
class NewKey:
    token: str  # shown once
    parsed: ParsedKey
    secret_sha256: str


def generate(kind: str, mode: str) -> NewKey:
    if kind not in PREFIXES or mode not in MODES:
        raise ValueError(f"bad key kind/mode {kind!r}/{mode!r}")
    random_hex = secrets.token_hex(_RANDOM_HEX // 2)
    token = f"mp_{PREFIXES[kind]}_{mode}_{random_hex}"
    return NewKey(token, ParsedKey(kind, mode, random_hex[:LOOKUP_CHARS]), digest(token))


def parse(token: str) -> ParsedKey | None:
    match = _PATTERN.match(token)
    if match is None:
        return None
    return ParsedKey(KINDS[match[1]], match[2], match[3][:LOOKUP_CHARS])


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token: str, secret_sha256: str) -> bool:
    return hmac.compare_digest(digest(token), secret_sha256)
