"""Signed entitlement tokens: a merchant checks access offline, with our public key.

A token is a JWT signed with Ed25519 (``alg: EdDSA``) carrying who may access
what until when. The platform signs with its private key; merchants verify
with the published public key (PEM or JWK), no call to micropay needed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

ISSUER = "micropay"
forever_s = 10 * 366 * 86_400  # tokens of perpetual entitlements are refreshed yearly at least


@dataclass(frozen=True, slots=True)
class EntitlementClaims:
    customer: str  # customer public id
    merchant: str  # merchant public id (the audience)
    item_ref: str
    entitlement_id: int
    expires_at_s: int


class EntitlementSigner:
    def __init__(self, private_key: Ed25519PrivateKey, key_id: str) -> None:
        self._key = private_key
        self.key_id = key_id

    @classmethod
    def generate(cls, key_id: str = "k1") -> EntitlementSigner:
        return cls(Ed25519PrivateKey.generate(), key_id)

    @classmethod
    def from_pem(cls, pem: bytes, key_id: str | None = None) -> EntitlementSigner:
        """Load a PEM private key; the key id defaults to a fingerprint of its public key."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the entitlement signing key must be Ed25519")
        if key_id is None:
            raw = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            key_id = hashlib.sha256(raw).hexdigest()[:16]
        return cls(key, key_id)

    def private_key_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_key_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(self, claims: EntitlementClaims, issued_at_s: int) -> str:
        payload = {
            "iss": ISSUER,
            "sub": claims.customer,
            "aud": claims.merchant,
            "item": claims.item_ref,
            "ent": claims.entitlement_id,
            "iat": issued_at_s,
            "exp": claims.expires_at_s,
        }
        return jwt.encode(payload, self._key, algorithm="EdDSA", headers={"kid": self.key_id})


def verify_entitlement(
    token: str, public_key_pem: str, merchant: str, now_s: int
) -> EntitlementClaims:
    """Verify signature, issuer, audience and expiry; raise ``jwt.InvalidTokenError`` if not."""
    key = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise jwt.InvalidTokenError("not an Ed25519 public key")
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience=merchant,
        issuer=ISSUER,
        options={
            "require": ["exp", "iat", "sub", "aud", "item", "ent"],
            "verify_iat": False,
            "verify_exp": False,  # checked below against the caller's clock
        },
        leeway=0,
    )
    if claims["exp"] <= now_s:
        raise jwt.ExpiredSignatureError("entitlement token expired")
    return EntitlementClaims(
        claims["sub"], claims["aud"], claims["item"], int(claims["ent"]), int(claims["exp"])
    )
