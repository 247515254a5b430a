"""Typed keys for what the aiohttp application and its requests carry."""

from __future__ import annotations

from aiohttp import web

from core.config import Settings
from core.engine import Engine

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
SCOPE = web.RequestKey("scope", str)  # which API key's conversations this request may touch


def get_engine(request: web.Request) -> Engine:
    return request.app[ENGINE]
