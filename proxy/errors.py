"""The one place where failures become OpenAI-shaped error answers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from core import (
    RETRY_AFTER_SECONDS,
    ActivityTimeout,
    CLIUnavailable,
    EngineError,
    LimitReached,
    Saturated,
    ShuttingDown,
    TurnCancelled,
    TurnFailed,
    UnknownModel,
    UpstreamError,
)
from proxy.schema import ErrorBody, ErrorDetail

log = logging.getLogger("proxy.errors")

OPENAI, ANTHROPIC = "openai", "anthropic"  # the error shapes


@dataclass(frozen=True)
class ApiFailure:
    status: int
    type: str
    message: str
    code: str | None = None
    param: str | None = None
    retry_after: int | None = None

    def body(self) -> ErrorBody:
        return ErrorBody(error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code))

    def anthropic_body(self) -> dict[str, Any]:
        """Anthropic's shape: its error types go by status; the field at fault is said in the message."""
        kind = _ANTHROPIC_TYPES.get(self.status, "api_error")
        message = f"{self.message} (at {self.param})" if self.param and self.param not in self.message else self.message
        return {"type": "error", "error": {"type": kind, "message": message}}

    def payload(self, dialect: str) -> dict[str, Any]:
        return self.anthropic_body() if dialect == ANTHROPIC else self.body().model_dump()

    def response(self, dialect: str = OPENAI) -> web.Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return web.json_response(self.payload(dialect), status=self.status, headers=headers)


_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error",
    529: "overloaded_error",
}  # fmt: skip


def dialect_of(request: web.Request) -> str:
    """Whose error shape a request gets: Anthropic's on its routes, OpenAI's everywhere else."""
    return ANTHROPIC if request.path.startswith("/v1/messages") else OPENAI


class ApiException(Exception):
    """Raised by handlers and middlewares; turned into a response by `error_middleware`."""

    def __init__(self, failure: ApiFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiException:
    return ApiException(ApiFailure(400, "invalid_request_error", message, code=code, param=param))


def model_not_found(exc: UnknownModel) -> ApiException:
    return ApiException(ApiFailure(404, "invalid_request_error", str(exc), code="model_not_found", param="model"))


def _upstream(exc: UpstreamError) -> ApiFailure:
    status = exc.status
    if isinstance(exc, LimitReached):
        # Answered at once while the window is used up (no CLI run): clients that retry a 429 get the same
        # answer, with Retry-After until the reset, and the words to show their user.
        resets = datetime.fromtimestamp(exc.resets_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        message = f"The Claude subscription's {exc.window.replace('_', '-')} limit is reached; it resets at {resets}."
        return ApiFailure(429, "rate_limit_error", message, code="subscription_limit_reached",
                          retry_after=exc.retry_after)  # fmt: skip
    if status == 429:
        # Said as what it is, a limit of the subscription the CLI runs on, after the CLI's own retries, and with when
        # to come back: clients that would retry such a 429 for minutes (OpenClaw) stop at once and show the words.
        # The wait is the upstream's own, as the CLI saw it; none when it did not say.
        wait = f"in {exc.retry_after} seconds" if exc.retry_after else "when the plan's limit resets"
        message = f"The Claude subscription's usage or rate limit was reached (429 from Anthropic); try again {wait}."
        message += f" {exc.message[:150]}"
        return ApiFailure(429, "rate_limit_error", message, code="upstream_rate_limited", retry_after=exc.retry_after)
    if status in (401, 403):
        return ApiFailure(401, "authentication_error", exc.message, code="upstream_authentication_failed")
    return ApiFailure(502, "api_error", exc.message, code="upstream_error")


def engine_failure(exc: EngineError) -> ApiFailure:
    """The table from engine errors to HTTP answers."""
    if isinstance(exc, Saturated):
        return ApiFailure(429, "rate_limit_error", exc.message, code="proxy_saturated", retry_after=exc.retry_after)
    if isinstance(exc, CLIUnavailable):
        return ApiFailure(503, "service_unavailable", exc.message, code="cli_unavailable")
    if isinstance(exc, UpstreamError):
        return _upstream(exc)
    if isinstance(exc, ActivityTimeout):
        return ApiFailure(504, "timeout", exc.message, code="activity_timeout")
    if isinstance(exc, ShuttingDown):
        return ApiFailure(
            503, "service_unavailable", exc.message, code="shutting_down", retry_after=RETRY_AFTER_SECONDS
        )
    if isinstance(exc, TurnCancelled):
        return ApiFailure(503, "service_unavailable", exc.message, code="cancelled")
    if isinstance(exc, TurnFailed):
        return ApiFailure(502, "api_error", exc.message, code="cli_failed")
    return ApiFailure(502, "api_error", exc.message, code="engine_error")


def failure_of(exc: BaseException) -> ApiFailure:
    """Any failure as an answer: the engine's by the table above, anything else as a 500 of our own."""
    if isinstance(exc, EngineError):
        return engine_failure(exc)
    return ApiFailure(500, "api_error", f"the daemon failed: {type(exc).__name__}: {exc}", code="internal_error")


def http_failure(exc: web.HTTPException) -> ApiFailure:
    if exc.status == 404:
        return ApiFailure(404, "invalid_request_error", "unknown route", code="not_found")
    if exc.status == 405:
        return ApiFailure(405, "invalid_request_error", "method not allowed for this route", code="method_not_allowed")
    if exc.status == 413:
        return ApiFailure(413, "invalid_request_error", "request body too large", code="request_too_large")
    return ApiFailure(exc.status, "invalid_request_error", exc.reason or "request failed")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    dialect = dialect_of(request)
    try:
        return await handler(request)
    except ApiException as exc:
        return exc.failure.response(dialect)
    except EngineError as exc:
        failure = engine_failure(exc)
        log.info("request_failed path=%s status=%s code=%s", request.path, failure.status, failure.code)
        return failure.response(dialect)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_failure(exc).response(dialect)
    except Exception as exc:  # a bug or a broken store: logged with its traceback, answered in the API's shape
        log.exception("request_crashed path=%s", request.path)
        return failure_of(exc).response(dialect)
