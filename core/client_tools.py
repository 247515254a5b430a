"""Tools that belong to the client (an OpenAI `tools` list), offered to Claude as real tools.

The daemon serves them over MCP (see `core.mcp_bridge`); the CLI sees them as
`mcp__client__<name>`. When Claude calls one, the MCP call waits here until the client
sends the result in its next request; meanwhile the turn is parked by the face.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("core.client_tools")

MCP_SERVER = "client"
CLI_PREFIX = f"mcp__{MCP_SERVER}__"
_MAX_NAME = 64 - len(CLI_PREFIX)  # the API takes tool names of at most 64 characters
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class ClientTool:
    name: str  # the client's own name, as it will come back in tool_calls
    mcp_name: str  # the name offered over MCP: safe characters, unique, short enough
    description: str
    schema: dict[str, Any]


def mcp_names(names: list[str]) -> list[str]:
    """Names MCP and the Anthropic API accept, one per client name, without collisions."""
    taken: set[str] = set()
    out = []
    for name in names:
        base = _UNSAFE.sub("_", name)[:_MAX_NAME] or "tool"
        candidate, n = base, 2
        while candidate in taken:
            suffix = f"_{n}"
            candidate, n = base[: _MAX_NAME - len(suffix)] + suffix, n + 1
        taken.add(candidate)
        out.append(candidate)
    return out


def tools_digest(tools: tuple[ClientTool, ...]) -> str:
    canonical = [(t.name, t.mcp_name, t.description, t.schema) for t in tools]
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ExpectedCall:
    """A call of a client tool that Claude made (seen in its message), and its result once the client sent it."""

    call_id: str
    tool: ClientTool
    arguments: dict[str, Any]
    result: asyncio.Future[tuple[str, bool]]  # (text, is_error)
    arrived: bool = False  # the CLI's MCP call for it reached the bridge


# How long an MCP call waits for the daemon to read the tool_use line that announces it. The CLI writes
# that line before it makes the call, but the two travel separately (stdout, and HTTP to the bridge), so
# under load the call can arrive first.
ANNOUNCE_WAIT = 30.0
_NOT_FOR_CLIENT = "This tool can be called only by the main agent, as part of its answer."


@dataclass
class ToolSession:
    """The client tools of one CLI process, reachable at a secret URL on the MCP bridge.

    Claude's message names its calls before the CLI makes them over MCP (one at a time or
    several at once, as it likes), so the calls are known from the message: the client gets
    them all at once, and each MCP call waits for (or finds) its result here.
    """

    tools: tuple[ClientTool, ...]
    result_timeout: float
    server: str = MCP_SERVER  # the name the CLI knows the tools' server by: its tools are mcp__<server>__<name>
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    expected: list[ExpectedCall] = field(default_factory=list)
    refused: list[tuple[ClientTool, dict[str, Any]]] = field(default_factory=list)  # subagents' calls
    announced: asyncio.Condition = field(default_factory=asyncio.Condition)

    def by_mcp_name(self, mcp_name: str) -> ClientTool | None:
        return next((t for t in self.tools if t.mcp_name == mcp_name), None)

    def by_cli_name(self, cli_name: str) -> ClientTool | None:
        prefix = f"mcp__{self.server}__"
        return self.by_mcp_name(cli_name.removeprefix(prefix)) if cli_name.startswith(prefix) else None

    async def expect(self, call_id: str, tool: ClientTool, arguments: dict[str, Any]) -> None:
        future = asyncio.get_running_loop().create_future()
        self.expected.append(ExpectedCall(call_id, tool, arguments, future))
        await self._announce()

    async def refuse(self, tool: ClientTool, arguments: dict[str, Any]) -> None:
        """A call that did not come from the main agent (a subagent's): refused when it arrives."""
        self.refused.append((tool, arguments))
        await self._announce()

    async def _announce(self) -> None:
        async with self.announced:
            self.announced.notify_all()

    def _announced(self, tool: ClientTool, arguments: dict[str, Any]) -> ExpectedCall | bool | None:
        """The expected call this MCP call is, False if it is to be refused, None if not known yet."""
        call = next((c for c in self.expected if not c.arrived and c.tool == tool and c.arguments == arguments), None)
        if call is not None:
            return call
        if (tool, arguments) in self.refused:
            self.refused.remove((tool, arguments))
            return False
        return None

    async def call(self, mcp_name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """An MCP tools/call: its result, as soon as the client has sent it (or an error after the timeout)."""
        tool = self.by_mcp_name(mcp_name)
        if tool is None:
            return _NOT_FOR_CLIENT, True
        found: ExpectedCall | bool | None = None

        def known() -> bool:
            nonlocal found
            found = self._announced(tool, arguments)
            return found is not None

        try:
            async with self.announced, asyncio.timeout(ANNOUNCE_WAIT):
                await self.announced.wait_for(known)
        except TimeoutError:
            log.warning("client_tool_call_unannounced tool=%s", tool.name)
            return _NOT_FOR_CLIENT, True
        if not isinstance(found, ExpectedCall):
            return _NOT_FOR_CLIENT, True
        call = found
        call.arrived = True
        try:
            async with asyncio.timeout(self.result_timeout):
                return await asyncio.shield(call.result)
        except TimeoutError:
            return "The client application did not return a result for this tool call in time.", True
        finally:
            self.expected.remove(call)

    def answer(self, call_id: str, text: str, is_error: bool = False) -> bool:
        for call in self.expected:
            if call.call_id == call_id and not call.result.done():
                call.result.set_result((text, is_error))
                return True
        return False

    def abandon(self, why: str) -> None:
        """Answer every call still without a result with an error, so the CLI can go on."""
        for call in list(self.expected):
            if not call.result.done():
                call.result.set_result((why, True))
