"""The listening socket, guarded: a cap on open connections, a bound on how long a request's headers
may take, and aiohttp's own low-level 400s (bad or oversized headers, broken chunking) in the OpenAI
shape with one log line, instead of plain text and a traceback.

aiohttp has no connection cap and bounds the wait for a request's headers only by its keep-alive
timeout (its timer runs from the connection's start and from each answer, and data arriving does not
reset it), so the site sets that timeout to HEADER_TIMEOUT and counts the connections itself.
Without these, 300 half-sent requests held 300 sockets forever and made the daemon unresponsive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from core import RETRY_AFTER_SECONDS
from proxy.errors import ApiFailure

log = logging.getLogger("proxy.listener")

HEADER_TIMEOUT = 30.0  # seconds a connection may take to send a request's headers (also the keep-alive)
MAX_CONNECTIONS = 1024  # open client connections, at most half the open-file limit (the CLIs need the rest)


def connection_cap() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(MAX_CONNECTIONS, soft // 2)) if soft != resource.RLIM_INFINITY else MAX_CONNECTIONS


def app_runner(app: web.Application) -> web.AppRunner:
    """The runner the daemon serves its app with (`claude-max serve`, and the tests alike)."""
    return web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=HEADER_TIMEOUT)


class _JSONErrors(RequestHandler):
    """aiohttp's connection handler, with its own error answers in the OpenAI shape."""

    __slots__ = ()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = " ".join(str(exc.message).split())[:200]
        log.warning("bad_http_request status=%s reason=%r", status, reason)
        failure = ApiFailure(
            status, "invalid_request_error", f"malformed HTTP request: {reason}", code="bad_http_request"
        )
        response = failure.response()
        response.force_close()
        return response


class _Busy(asyncio.Protocol):
    """A connection over the cap: told so at once (503, in the OpenAI shape) and closed."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        log.warning("connection_refused cap=%s", self.cap)
        failure = ApiFailure(503, "service_unavailable", f"the daemon has {self.cap} connections open; try again soon",
                             code="too_many_connections")  # fmt: skip
        body = json.dumps(failure.payload("openai")).encode()
        head = (
            f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Retry-After: {RETRY_AFTER_SECONDS}\r\nConnection: close\r\n\r\n"
        )
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(head.encode() + body)
        transport.close()


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections are capped and whose aiohttp-level errors are JSON."""

    __slots__ = ("_cap",)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int | None = None) -> None:
        super().__init__(runner, host, port)
        self._cap = max_connections or connection_cap()

    def _connection(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self._cap:
            return _Busy(self._cap)
        handler = server()
        handler.__class__ = _JSONErrors  # (the same layout: it only answers errors differently)
        return handler

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connection, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )  # fmt: skip
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
