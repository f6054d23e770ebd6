"""API keys: where they come from, how they are compared, and which side endpoints need one."""

from __future__ import annotations

import hmac
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from propensity.core.settings import Settings


def key_ok(given: str, keys: list[bytes]) -> bool:
    """Constant-time comparison with every key (a key's length leaks nothing either)."""
    return any(hmac.compare_digest(given.encode(), k) for k in keys)


def protected_paths(settings: Settings, app: FastAPI) -> set[str]:
    s = settings.serving
    loopback = s.host in ("127.0.0.1", "::1", "localhost")
    paths = set()
    if s.protect_metrics or (s.protect_metrics is None and not loopback):
        paths.add("/metrics")
    if s.protect_docs:
        paths |= {p for p in (app.openapi_url, app.docs_url, app.redoc_url, "/docs/oauth2-redirect") if p}
    return paths


def api_keys(settings: Settings) -> list[bytes]:
    raw = os.environ.get(settings.serving.api_keys_env, "")
    return [k.strip().encode() for k in raw.split(",") if k.strip()]
