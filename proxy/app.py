"""The HTTP face as an aiohttp application: routes and middlewares. The engine it serves is put under
`ENGINE` by the host (`claude_max.daemon.compose`), in a cleanup context that runs before this one's."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from core import Settings, UnknownModel, __version__, listed_models, resolve_model
from proxy.chat import chat_completions
from proxy.errors import error_middleware, model_not_found
from proxy.keys import ENGINE, METRICS, PARKED, SETTINGS, get_engine
from proxy.limits import add_limits_header, limits
from proxy.messages import count_tokens, messages
from proxy.metrics import Metrics
from proxy.parked import ParkedTurns
from proxy.responses import responses
from proxy.schema import ModelCard, ModelList
from proxy.security import auth_middleware, body_limit_middleware, host_middleware, origin_middleware

log = logging.getLogger("proxy.app")

ANTHROPIC_VERSION = "anthropic-version"  # the header every Anthropic SDK request carries


async def health(request: web.Request) -> web.Response:
    engine = get_engine(request)
    problem = await engine.store.problem()  # a store that cannot be written serves no conversation well
    return web.json_response(
        {
            "status": "degraded" if problem else "ok",
            **({"store": problem} if problem else {}),
            "version": __version__,
            "running_turns": engine.running,
            "waiting_turns": engine.waiting,  # for a slot
            "conversation_waiting_turns": engine.waiting_for_conversation,  # for their conversation's last turn
            "tool_waiting_turns": engine.waiting_for_clients,  # for a client's tool results
            "max_concurrent": engine.settings.max_concurrent,
        },
        status=503 if problem else 200,
    )


def _anthropic_card(name: str) -> dict[str, str]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}


async def models(request: web.Request) -> web.Response:
    """The accepted model ids, in Anthropic's list shape for its SDK (it sends `anthropic-version`)."""
    settings = request.app[SETTINGS]
    names = listed_models(settings.model_aliases)
    if ANTHROPIC_VERSION in request.headers:
        cards = [_anthropic_card(name) for name in names]
        return web.json_response({"data": cards, "has_more": False, "first_id": names[0], "last_id": names[-1]})
    return web.json_response(ModelList(data=[ModelCard(id=name) for name in names]).model_dump())


async def model(request: web.Request) -> web.Response:
    """One model id the proxy accepts (a listed one, an alias, a dated or prefixed id)."""
    settings, name = request.app[SETTINGS], request.match_info["model"]
    try:
        resolve_model(name, default=settings.default_model, aliases=settings.model_aliases)
    except UnknownModel as exc:
        raise model_not_found(exc) from None
    if ANTHROPIC_VERSION in request.headers:
        return web.json_response(_anthropic_card(name))
    return web.json_response(ModelCard(id=name).model_dump())


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status = 499  # nginx's "client closed the request", when the handler never finished
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception:
        status = 500  # (the error middleware answers everything; this is aiohttp's own 500, if ever)
        raise
    finally:
        log.info(
            "request method=%s path=%s status=%s duration_ms=%.0f",
            request.method, request.path, status, (time.monotonic() - started) * 1000,
        )  # fmt: skip
        if METRICS in request.app:
            request.app[METRICS].count_request(request, status)


def create_app(settings: Settings) -> web.Application:
    """The HTTP face. The host must put the engine under `ENGINE` before this app's cleanup contexts run."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_log_middleware, error_middleware, host_middleware, origin_middleware, auth_middleware,
                     body_limit_middleware],
    )  # fmt: skip
    app[SETTINGS] = settings
    app[PARKED] = ParkedTurns(settings.tool_result_timeout, settings.tool_parked_max)

    async def metrics_context(app: web.Application) -> AsyncIterator[None]:
        app[METRICS] = Metrics(app[ENGINE])
        yield

    async def release_parked(app: web.Application) -> None:
        # Runs before aiohttp waits for handlers, after the host stopped the engine's turns.
        await app[PARKED].close()

    app.cleanup_ctx.append(metrics_context)
    app.on_shutdown.append(release_parked)
    app.on_response_prepare.append(add_limits_header)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/limits", limits)
    app.router.add_get("/v1/models/{model:.+}", model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_get("/metrics", lambda request: request.app[METRICS].handler(request))
    return app
