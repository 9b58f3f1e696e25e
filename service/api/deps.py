"""Dependencies the routes declare: the app's state and the API-key check.

All are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency on a worker
thread, a thread hop per dependency per request that cost ~40% of the event loop under load."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from slimserve.service.errors import Unauthorized
from slimserve.service.metrics import Metrics
from slimserve.service.registry import Registry
from slimserve.service.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def check_key(settings: Settings, authorization: str | None, admin: bool = False) -> None:
    """Constant-time comparison against every configured key; no keys configured means open.

    ``admin``: the admin keys when any are set (inference keys do not suffice), else the API keys.
    Admin keys are accepted wherever an API key is."""
    if admin and settings.admin_keys:
        keys = settings.admin_keys
    elif settings.api_keys:
        keys = [*settings.api_keys, *settings.admin_keys]
    else:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    given = token.strip().encode()
    matches = [hmac.compare_digest(given, key.get_secret_value().encode()) for key in keys]
    if not any(matches):
        raise Unauthorized("invalid admin key" if admin and settings.admin_keys else "invalid API key")


async def require_key(request: Request) -> None:
    check_key(await get_settings(request), request.headers.get("authorization"))


async def require_admin_key(request: Request) -> None:
    check_key(await get_settings(request), request.headers.get("authorization"), admin=True)


async def require_key_for_metrics(request: Request) -> None:
    settings = await get_settings(request)
    if settings.metrics_auth:
        check_key(settings, request.headers.get("authorization"))


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
