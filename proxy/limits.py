"""The subscription's limits over HTTP: `GET /v1/limits`, and the `X-Claude-Limits` header that every
answer of an API route carries once the CLI has reported them (so a client sees them without asking).

    X-Claude-Limits: five_hour=0.91;resets=1796238508;status=allowed_warning, seven_day=0.4;resets=1796489908

A dictionary in the manner of RFC 8941: per window its utilization (0..1), when it resets (epoch
seconds) and its status. A streamed answer's header is the state when the stream began.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web

from core import SubscriptionLimits
from proxy.keys import ENGINE, get_engine

HEADER = "X-Claude-Limits"


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


async def limits(request: web.Request) -> web.Response:
    """The subscription's usage windows, as the CLI last reported them (only on a subscription credential)."""
    engine, now = get_engine(request), time.time()
    snapshot = engine.limits.snapshot(now)
    windows = {
        window.name: {"utilization": window.utilization, "resets_at": _iso(window.resets_at), "status": window.status,
                      "observed_at": _iso(seen), "age_seconds": round(now - seen, 1)}
        for window, seen in snapshot
    }  # fmt: skip
    return web.json_response({"status": engine.limits.status(now) or "unknown", "windows": windows})


def header_value(subscription: SubscriptionLimits, now: float | None = None) -> str:
    """The header's value; empty when no window was ever reported."""
    parts = []
    for window, _ in subscription.snapshot(now):
        item = f"{window.name}={window.utilization if window.utilization is not None else '?'}"
        if window.resets_at is not None:
            item += f";resets={int(window.resets_at)}"
        parts.append(item + (f";status={window.status}" if window.status else ""))
    return ", ".join(parts)


async def add_limits_header(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer of /v1/* to a client that passed the keys (not on a 401 or a 403)."""
    if not request.path.startswith("/v1/") or response.status in (401, 403) or ENGINE not in request.app:
        return
    if value := header_value(request.app[ENGINE].limits):
        response.headers[HEADER] = value
