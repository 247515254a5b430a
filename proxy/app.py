"""The aiohttp application: routes, middlewares, and the engine's lifetime."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from core import __version__
from core.config import Settings
from core.engine import Engine
from core.models import listed_models
from proxy.chat import chat_completions
from proxy.errors import error_middleware
from proxy.keys import BOT, ENGINE, METRICS, PARKED, SETTINGS, get_engine
from proxy.metrics import Metrics
from proxy.parked import ParkedTurns
from proxy.schema import ModelCard, ModelList
from proxy.security import auth_middleware, body_limit_middleware, origin_middleware

log = logging.getLogger("proxy.app")


async def health(request: web.Request) -> web.Response:
    engine = get_engine(request)
    await engine.store.ping()
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "running_turns": engine.running,
            "waiting_turns": engine.waiting,
            "max_concurrent": engine.settings.max_concurrent,
        }
    )


async def models(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    listing = ModelList(data=[ModelCard(id=name) for name in listed_models(settings.model_aliases)])
    return web.json_response(listing.model_dump())


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status = 499  # nginx's "client closed the request", when the handler never finished
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        log.info(
            "request method=%s path=%s status=%s duration_ms=%.0f",
            request.method, request.path, status, (time.monotonic() - started) * 1000,
        )  # fmt: skip
        if METRICS in request.app:
            request.app[METRICS].count_request(request, status)


def _add_bot(app: web.Application, settings: Settings) -> None:
    """The Telegram bot, on the same loop and engine; it stops polling before turns are cancelled."""
    from bot.app import ClaudeBot  # only when the bot is on: PTB takes a while to import

    async def bot_context(app: web.Application) -> AsyncIterator[None]:
        bot = ClaudeBot(settings, app[ENGINE])
        app[BOT] = bot
        await bot.start()
        yield
        await bot.stop()

    async def stop_polling(app: web.Application) -> None:
        await app[BOT].stop_polling()

    app.cleanup_ctx.append(bot_context)
    app.on_shutdown.append(stop_polling)


def create_app(settings: Settings, engine: Engine | None = None) -> web.Application:
    """The daemon's HTTP application. Pass an engine to share one with other faces; otherwise one is built."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_log_middleware, error_middleware, origin_middleware, auth_middleware,
                     body_limit_middleware],
    )  # fmt: skip
    app[SETTINGS] = settings
    app[PARKED] = ParkedTurns(settings.tool_result_timeout, settings.tool_parked_max)

    async def engine_context(app: web.Application) -> AsyncIterator[None]:
        if engine is not None:
            app[ENGINE] = engine
            app[METRICS] = Metrics(engine)
            yield
            return
        async with Engine(settings) as own:
            app[ENGINE] = own
            app[METRICS] = Metrics(own)
            yield

    async def cancel_turns(app: web.Application) -> None:
        # Runs before aiohttp waits for handlers: a turn still running would hold the shutdown.
        await app[ENGINE].shut_down()
        await app[PARKED].close()

    app.cleanup_ctx.append(engine_context)
    if settings.telegram_bot_token is not None:
        _add_bot(app, settings)
    app.on_shutdown.append(cancel_turns)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/metrics", lambda request: request.app[METRICS].handler(request))
    return app
