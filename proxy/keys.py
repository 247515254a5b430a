"""Typed keys for what the aiohttp application and its requests carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from core.config import Settings
from core.engine import Engine

if TYPE_CHECKING:
    from bot.app import ClaudeBot
    from proxy.metrics import Metrics
    from proxy.parked import ParkedTurns

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
BOT: web.AppKey[ClaudeBot] = web.AppKey("bot")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
PARKED: web.AppKey[ParkedTurns] = web.AppKey("parked")
SCOPE = web.RequestKey("scope", str)  # which API key's conversations this request may touch


def get_engine(request: web.Request) -> Engine:
    return request.app[ENGINE]
