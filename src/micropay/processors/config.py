"""Which card processor a process talks to: the simulated one or Stripe, from options or env.

``micropay serve`` and ``micropay worker`` build their processor here. The rules:

- ``MICROPAY_PROCESSOR`` (or ``--processor``) is ``simulated`` (the default) or
  ``stripe``. Anything else is refused.
- ``stripe`` needs ``STRIPE_API_KEY``: a secret or restricted key (``sk_test_``,
  ``sk_live_``, ``rk_test_``, ``rk_live_``); a publishable key (``pk_``) or a
  value of another shape is refused. Its prefix gives the processor's mode
  (test or live). ``STRIPE_WEBHOOK_SECRET`` (``whsec_...``) is needed where
  signed events come in (the API's ``/v1/processor-events``), not by the worker.
  ``STRIPE_API_BASE`` (optional) points the client at another server, such as
  localstripe; a live key is only ever sent over ``https``.
- The simulated processor is refused while ``STRIPE_API_KEY`` is set: a
  deployment that holds a Stripe key but forgot to choose Stripe would
  otherwise mark charges and payouts paid without moving any money.
- The simulated processor is in test mode. A process serves the one mode of
  its processor: the API refuses keys of the other mode (``mode_mismatch``)
  and the worker refuses to start on a database holding merchants of the
  other mode (see ``micropay.api.runtime``).

Secrets never appear in a message, a log line or a ``repr``: errors name the
variable, never its value.
"""

from __future__ import annotations

import os
import re
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from micropay.processors.simulated import SimulatedProcessor

if TYPE_CHECKING:
    from micropay.processors.stripe import StripeProcessor
    from micropay.service.ports import Processor

PROCESSOR_KINDS = ("simulated", "stripe")
DEFAULT_KIND = "simulated"
ENV_PROCESSOR = "MICROPAY_PROCESSOR"
ENV_API_KEY = "STRIPE_API_KEY"
ENV_API_BASE = "STRIPE_API_BASE"
ENV_WEBHOOK_SECRET = "STRIPE_WEBHOOK_SECRET"
stripe_timeout_s = 30.0
api_base_chars_max = 2_000

# Secret (sk_) and restricted (rk_) keys charge; publishable keys (pk_) cannot.
_KEY_RE = re.compile(r"^(?:sk|rk)_(test|live)_[A-Za-z0-9_]{8,250}$")
_WEBHOOK_SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9_+/=]{4,250}$")


class ProcessorConfigError(ValueError):
    """The processor settings are missing or wrong; the message names settings, never secrets."""


@dataclass(eq=False)
class ConfiguredProcessor:
    """A processor built from settings, with its mode (``test`` or ``live``)."""

    kind: str
    mode: str
    processor: Processor = field(repr=False)

    def close(self) -> None:
        """Release the processor's HTTP connections (Stripe); nothing for the simulated one."""
        close = getattr(self.processor, "close", None)
        if callable(close):
            close()

    def describe(self) -> str:
        """One line for a start-up banner, without secrets."""
        return f"processor {self.kind} ({self.mode} mode)"


def processor_from_options(
    kind: str | None,
    *,
    api_key: str | None = None,
    api_base: str | None = None,
    webhook_secret: str | None = None,
    events: bool = True,
    timeout_s: float = stripe_timeout_s,
) -> ConfiguredProcessor:
    """Build the processor ``kind`` (``None``: the default, simulated).

    ``events``: whether this process verifies incoming processor events (the API
    does, the worker does not); only then is ``webhook_secret`` required.
    Raises :class:`ProcessorConfigError` with a message fit for an operator.
    """
    chosen = (kind or DEFAULT_KIND).strip().lower()
    if chosen not in PROCESSOR_KINDS:
        raise ProcessorConfigError(
            f"unknown processor {kind!r}: choose one of {', '.join(PROCESSOR_KINDS)}"
        )
    if chosen == "simulated":
        if api_key:
            raise ProcessorConfigError(
                f"{ENV_API_KEY} is set but the processor is simulated, which moves no money:"
                f" choose --processor stripe ({ENV_PROCESSOR}=stripe), or unset {ENV_API_KEY}"
            )
        return ConfiguredProcessor("simulated", "test", SimulatedProcessor())
    return ConfiguredProcessor(
        "stripe",
        stripe_key_mode(api_key),
        _stripe(api_key or "", api_base, webhook_secret, events=events, timeout_s=timeout_s),
    )


def processor_from_env(
    environ: Mapping[str, str] | None = None, *, kind: str | None = None, events: bool = True
) -> ConfiguredProcessor:
    """Build the processor from ``MICROPAY_PROCESSOR`` and ``STRIPE_*`` (``kind`` overrides)."""
    env = os.environ if environ is None else environ
    return processor_from_options(
        kind if kind is not None else env.get(ENV_PROCESSOR),
        api_key=env.get(ENV_API_KEY, "").strip() or None,
        api_base=env.get(ENV_API_BASE, "").strip() or None,
        webhook_secret=env.get(ENV_WEBHOOK_SECRET, "").strip() or None,
        events=events,
    )


def stripe_key_mode(api_key: str | None) -> str:
    """``test`` or ``live`` from a Stripe secret key's prefix; refuses anything else."""
    if not api_key:
        raise ProcessorConfigError(
            f"the stripe processor needs {ENV_API_KEY} (a secret key, sk_test_... or sk_live_...)"
        )
    found = _KEY_RE.fullmatch(api_key)
    if found is None:
        hint = " (a publishable key cannot charge)" if api_key.startswith("pk_") else ""
        raise ProcessorConfigError(
            f"{ENV_API_KEY} is not a Stripe secret key: expected sk_test_..., sk_live_...,"
            f" rk_test_... or rk_live_...{hint}"
        )
    return found.group(1)


def _stripe(
    api_key: str,
    api_base: str | None,
    webhook_secret: str | None,
    *,
    events: bool,
    timeout_s: float,
) -> StripeProcessor:
    from micropay.processors.stripe import StripeProcessor

    mode = stripe_key_mode(api_key)
    if api_base is not None:
        _check_api_base(api_base, mode)
    if webhook_secret:
        if not _WEBHOOK_SECRET_RE.fullmatch(webhook_secret):
            raise ProcessorConfigError(
                f"{ENV_WEBHOOK_SECRET} is not a Stripe webhook signing secret (whsec_...)"
            )
    elif events:
        raise ProcessorConfigError(
            f"the stripe processor needs {ENV_WEBHOOK_SECRET} (whsec_...) to verify the events"
            " Stripe sends to /v1/processor-events"
        )
    else:
        # This process never verifies events: a random secret no sender knows rejects them all.
        webhook_secret = f"whsec_unused_{secrets.token_hex(16)}"
    return StripeProcessor(api_key, api_base, webhook_secret=webhook_secret, timeout_s=timeout_s)


def _check_api_base(api_base: str, mode: str) -> None:
    if len(api_base) > api_base_chars_max:
        raise ProcessorConfigError(f"{ENV_API_BASE} is too long")
    parts = urllib.parse.urlsplit(api_base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProcessorConfigError(f"{ENV_API_BASE} must be an http(s) URL such as https://host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ProcessorConfigError(f"{ENV_API_BASE} must be a plain URL (no credentials or query)")
    if mode == "live" and parts.scheme != "https":
        raise ProcessorConfigError(f"a live key is only sent over https: {ENV_API_BASE} is http")
