"""The MCP server that offers clients' tools to the CLI, on loopback, with the official `mcp` package.

One server for the daemon (uvicorn in the daemon's event loop, on a free 127.0.0.1 port);
each CLI process with client tools gets its own URL (`/mcp/<token>`) and bearer secret,
written to a 0600 file passed as `--mcp-config`, so no other process can list or answer
its tools and nothing secret shows in `ps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from core.client_tools import MCP_SERVER, ToolSession

log = logging.getLogger("core.mcp_bridge")

Scope = dict[str, Any]


class McpBridge:
    def __init__(self, config_dir: Path) -> None:
        self._config_dir = config_dir
        self._sessions: dict[str, ToolSession] = {}
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            return
        mcp = Server(MCP_SERVER, on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        manager = StreamableHTTPSessionManager(app=mcp, json_response=True, stateless=True)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        guarded = _Guard(manager.asgi_app, self._sessions)
        config = uvicorn.Config(guarded, log_level="warning", log_config=None, lifespan="off", access_log=False)
        server = self._server = _QuietServer(config)

        async def serve() -> None:  # one task owns the manager's task group, from start to end
            async with manager.run():
                await server.serve(sockets=[listener])

        self._task = asyncio.create_task(serve())
        while not server.started and not self._task.done():  # noqa: ASYNC110 - uvicorn offers only a flag
            await asyncio.sleep(0.005)
        if self._task.done():
            self._server = None
            await self._task  # raises what went wrong
        log.info("mcp_bridge_started port=%s", self.port)

    async def stop(self) -> None:
        for session in self._sessions.values():
            session.abandon("the daemon is shutting down")
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None

    # -- sessions -----------------------------------------------------------------------------

    def open(self, session: ToolSession) -> Path:
        """Serve a session's tools; returns the `--mcp-config` file for its CLI."""
        self._sessions[session.token] = session
        self._config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._config_dir / f"{session.token}.json"
        config = {
            "mcpServers": {
                session.server: {
                    "type": "http",
                    "url": f"http://127.0.0.1:{self.port}/mcp/{session.token}",
                    "headers": {"Authorization": f"Bearer {session.secret}"},
                }
            }
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(config, file)
        return path

    def close(self, session: ToolSession) -> None:
        session.abandon("the Claude Code process serving this conversation ended")
        self._sessions.pop(session.token, None)
        (self._config_dir / f"{session.token}.json").unlink(missing_ok=True)

    def _session(self, ctx: Any) -> ToolSession:
        token = ctx.request.url.path.rstrip("/").rsplit("/", 1)[-1]
        return self._sessions[token]  # the guard let only known tokens in

    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        session = self._session(ctx)
        return types.ListToolsResult(
            tools=[types.Tool(name=t.mcp_name, description=t.description, input_schema=t.schema) for t in session.tools]
        )

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        session = self._session(ctx)
        text, is_error = await session.call(params.name, params.arguments or {})
        return types.CallToolResult(content=[types.TextContent(text=text)], is_error=is_error)


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: SIGTERM belongs to the daemon, which drains first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Guard:
    """ASGI wrapper: only `/mcp/<known token>` with that session's bearer secret gets through."""

    def __init__(self, app: Any, sessions: dict[str, ToolSession]) -> None:
        self._app = app
        self._sessions = sessions

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope.get("path", "")
        token = path.rstrip("/").rsplit("/", 1)[-1] if path.startswith("/mcp/") else ""
        session = self._sessions.get(token)
        headers = dict(scope.get("headers") or [])
        presented = headers.get(b"authorization", b"").decode(errors="replace")
        if session is None or not hmac.compare_digest(presented, f"Bearer {session.secret}"):
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"not found"})
            return
        await self._app(scope, receive, send)
