"""Typed keys for what the aiohttp application and its requests carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from core import Engine, Settings

if TYPE_CHECKING:
    from proxy.metrics import Metrics
    from proxy.parked import ParkedTurns

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
PARKED: web.AppKey[ParkedTurns] = web.AppKey("parked")
SCOPE = web.RequestKey("scope", str)  # which API key's conversations this request may touch


def get_engine(request: web.Request) -> Engine:
    return request.app[ENGINE]
