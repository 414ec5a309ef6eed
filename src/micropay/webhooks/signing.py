"""Standard Webhooks signatures (https://www.standardwebhooks.com), by the reference library.

Headers: ``webhook-id`` (the event id, the same on every retry: receivers
dedupe by it), ``webhook-timestamp`` (seconds, when this attempt was signed)
and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``).
Secrets are ``whsec_`` + base64 of 24 random bytes.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

secret_bytes = 24
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(secret_bytes)).decode()


def sign_headers(secret: str, message_id: str, timestamp_s: int, body: str) -> dict[str, str]:
    signature = Webhook(secret).sign(message_id, datetime.fromtimestamp(timestamp_s, UTC), body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature,
    }
