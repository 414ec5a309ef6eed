"""``micropay serve`` and ``micropay keys create|revoke|list``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from micropay.cli.options import database_url_option
from micropay.payments.tokens import EntitlementSigner

if TYPE_CHECKING:
    from micropay.processors.config import ConfiguredProcessor

processor_option = click.option(
    "--processor",
    "processor_kind",
    envvar="MICROPAY_PROCESSOR",
    type=click.Choice(["simulated", "stripe"], case_sensitive=False),
    default="simulated",
    show_default=True,
    help="Card processor (env MICROPAY_PROCESSOR). stripe reads STRIPE_API_KEY,"
    " STRIPE_WEBHOOK_SECRET and optionally STRIPE_API_BASE from the environment.",
)


class ConfigError(click.ClickException):
    """A bad setting: ``Error: <message>`` and exit status 2, no traceback."""

    exit_code = 2


def build_processor(kind: str, *, events: bool) -> ConfiguredProcessor:
    """The processor ``kind`` from the environment's STRIPE_* settings, or exit 2 saying why."""
    from micropay.processors.config import ProcessorConfigError, processor_from_env

    try:
        return processor_from_env(kind=kind, events=events)
    except ProcessorConfigError as error:
        raise ConfigError(str(error)) from None


@click.command()
@database_url_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65_535))
@click.option(
    "--threads",
    default=40,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker threads, each with its own database connection.",
)
@click.option(
    "--signing-key-file",
    envvar="MICROPAY_SIGNING_KEY_FILE",
    default="micropay-signing-key.pem",
    show_default=True,
    help="Ed25519 key (PEM) that signs entitlement tokens; created on first start"
    " (env MICROPAY_SIGNING_KEY_FILE).",
)
@processor_option
def serve(
    database_url: str,
    host: str,
    port: int,
    threads: int,
    signing_key_file: str,
    processor_kind: str,
) -> None:
    """Serve the HTTP API (migrates the database first).

    API keys of the other mode than the processor's are refused (mode_mismatch):
    the simulated processor and sk_test_ keys serve test keys, sk_live_ keys live ones.
    """
    import uvicorn

    from micropay.api import ApiConfig, create_app
    from micropay.api.observability import configure_logging
    from micropay.store.migrate import upgrade

    configured = build_processor(processor_kind, events=True)
    try:
        upgrade(database_url)
        signer = load_or_create_signer(Path(signing_key_file))
        config = ApiConfig(
            database_url,
            processor=configured.processor,
            processor_mode=configured.mode,
            worker_threads=threads,
            signer=signer,
        )
        app = create_app(config)

        click.echo(
            f"micropay API on http://{host}:{port} (OpenAPI at /openapi.json),"
            f" {configured.describe()}"
        )
        # No access log from uvicorn: it would log raw paths; the app logs route templates.
        # JSON lines, redacted, with request ids: uvicorn's own lines go the same way.
        configure_logging()
        uvicorn.run(app, host=host, port=port, access_log=False, log_config=None, log_level="info")
    finally:
        configured.close()


def load_or_create_signer(path: Path) -> EntitlementSigner:
    """The entitlement signing key from ``path``; created (mode 0600) on first start.

    Tokens must verify across restarts and worker processes, so the key is
    never generated per process.
    """
    if path.exists():
        return EntitlementSigner.from_pem(path.read_bytes())
    signer = EntitlementSigner.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(signer.private_key_pem())
    click.echo(f"created the entitlement signing key {path} (keep it secret, back it up)")
    return EntitlementSigner.from_pem(path.read_bytes())


@click.group()
def keys() -> None:
    """API keys: shown once at creation, stored hashed."""


@keys.command("create")
@database_url_option
@click.option("--operator", is_flag=True, help="A platform operator key (no merchant).")
@click.option("--merchant", default=None, help="Merchant public id (mer_...).")
@click.option(
    "--kind", type=click.Choice(["secret", "publishable"]), default="secret", show_default=True
)
@click.option("--mode", type=click.Choice(["test", "live"]), default="test", show_default=True)
def keys_create(
    database_url: str, operator: bool, merchant: str | None, kind: str, mode: str
) -> None:
    """Create a key and print it once. Rotate by creating a new key, then revoking the old."""
    from micropay.api.admin import KeyAdminError, create_key

    try:
        token = create_key(
            database_url, "operator" if operator else kind, mode, None if operator else merchant
        )
    except KeyAdminError as error:
        raise click.ClickException(str(error)) from None
    click.echo(token)


@keys.command("revoke")
@database_url_option
@click.argument("key_id")
def keys_revoke(database_url: str, key_id: str) -> None:
    """Revoke a key by its id (the 16 hex digits after the prefix)."""
    from micropay.api.admin import revoke_key

    if not revoke_key(database_url, key_id):
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked {key_id}")


@keys.command("list")
@database_url_option
@click.option("--merchant", default=None, help="Merchant public id; omit for operator keys.")
def keys_list(database_url: str, merchant: str | None) -> None:
    """List keys (ids only; secrets are never shown again)."""
    from micropay.api.admin import KeyAdminError, list_keys

    try:
        rows = list_keys(database_url, merchant)
    except KeyAdminError as error:
        raise click.ClickException(str(error)) from None
    for row in rows:
        state = "revoked" if row.revoked_at_us is not None else "active"
        click.echo(f"{row.lookup}  {row.kind:<11} {row.mode}  {state}")
