"""The HTTP API (FastAPI): ``create_app(ApiConfig(database_url))``."""

from __future__ import annotations

from micropay.api.app import create_app
from micropay.api.runtime import ApiConfig

__all__ = ["ApiConfig", "create_app"]
