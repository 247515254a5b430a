"""The launch spec: how a turn's CLI process is started, or found already warm.

It knows the command line, the environment, the working directory and what makes two
processes interchangeable (their signature); it owns the warm pool and the MCP bridge the
client's tools are served on. The engine builds one and hands it to every turn.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.client_tools import MCP_SERVER, ClientTool, ToolSession, tools_digest
from core.config import ASK, Settings
from core.errors import CLIUnavailable
from core.hygiene import PROCESS_VARIABLE, death_signal_prefix
from core.process import CLIProcess, Spawn
from core.store import Conversation
from core.warm import Signature, WarmPool

if TYPE_CHECKING:
    from core.mcp_bridge import McpBridge


_NEVER_ASKS = {"bypassPermissions", "dontAsk"}


@dataclass(frozen=True)
class LaunchOptions:
    """What a turn asks of its process beyond the model and the session; fixed when the process starts,
    so a warm process serves only turns that ask the same."""

    tools: tuple[ClientTool, ...] = ()  # the client's own tools, served over MCP
    mode: str = ""  # `ask` or one of the CLI's permission modes; empty: CLAUDE_PERMISSION_MODE
    schema: str = ""  # a JSON Schema (as JSON text) the answer must be an instance of: `--json-schema`
    effort: str = ""  # the CLI's `--effort`
    workdir: str = ""  # where a new session starts (a Telegram project); empty: CLAUDE_WORKDIR
    tools_server: str = MCP_SERVER  # the MCP server the tools are offered under (the bot's are `telegram`)


NO_OPTIONS = LaunchOptions()


class Launcher:
    def __init__(
        self, settings: Settings, *, marks: dict[str, str], background: Callable[[Awaitable[None]], object]
    ) -> None:
        self.settings = settings
        self._marks = marks  # in every child's environment: which daemon started it (see core.hygiene)
        self.accepting = False  # whether new turns may come (spares started, processes kept warm)
        self._bridge: McpBridge | None = None  # started when a client first offers its tools
        self.pool = WarmPool(
            capacity=settings.warm_max, idle_seconds=settings.warm_idle, spares=settings.warm_spares,
            background=background,
        )  # fmt: skip

    def open(self) -> None:
        self.accepting = True
        self.pool.refill(self._start_spare)

    async def close(self) -> None:
        self.accepting = False
        await self.pool.close()
        if self._bridge is not None:
            await self._bridge.stop()

    @property
    def keeps_warm(self) -> bool:
        """Whether a process that ended its turn cleanly is kept for the conversation's next one."""
        return bool(self.pool.capacity) and self.accepting

    def mode(self, mode: str) -> str:
        """A turn's permission mode: its face's, else CLAUDE_PERMISSION_MODE."""
        return mode or self.settings.claude_permission_mode

    def argv(self, model: str, resume: str | None, options: LaunchOptions = NO_OPTIONS) -> list[str]:
        s = self.settings
        mode = self.mode(options.mode)
        # `ask` is the CLI's default mode. In every mode that can ask, the CLI asks its host (this daemon) on
        # stdio before a tool that needs approval, and a person answers (core.approvals); headless, it would deny.
        permissions = ["default" if mode == ASK else mode]
        if mode not in _NEVER_ASKS:
            permissions += ["--permission-prompt-tool", "stdio"]
        argv = [
            s.claude_bin, "-p",
            "--input-format", "stream-json",
            "--output-format", "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--permission-mode", *permissions,
        ]  # fmt: skip
        if model:
            argv += ["--model", model]
        if s.fallback_model and s.fallback_model != model:  # (the CLI refuses a fallback that is the main model)
            argv += ["--fallback-model", s.fallback_model]
        if s.claude_max_turns:
            argv += ["--max-turns", str(s.claude_max_turns)]
        if options.schema:
            argv += ["--json-schema", options.schema]
        if options.effort:
            argv += ["--effort", options.effort]
        if resume:
            argv += ["--resume", resume]
        return argv

    def workdir(self, resume: Conversation | None, options: LaunchOptions = NO_OPTIONS) -> Path:
        if resume is not None and Path(resume.workdir).is_dir():
            return Path(resume.workdir)  # the CLI keeps sessions per project directory
        return Path(options.workdir) if options.workdir else self.settings.workdir

    def signature(self, model: str, workdir: Path, options: LaunchOptions = NO_OPTIONS) -> Signature:
        """What a process was started with; a warm process serves only turns that want the same."""
        s = self.settings
        o = options
        return (model, str(workdir), s.claude_bin, self.mode(o.mode), s.claude_max_turns, o.schema, o.effort,
                tools_digest(o.tools), o.tools_server)  # fmt: skip

    async def start(self, model: str, resume: Conversation | None, options: LaunchOptions = NO_OPTIONS) -> CLIProcess:
        """A new process, started (`CLIUnavailable` when the CLI cannot be found)."""
        # The process's own mark, inherited by whatever it starts: its stop sweeps up what escaped its group.
        env = {**self.settings.child_environment(), **self._marks, PROCESS_VARIABLE: uuid.uuid4().hex}
        binary = shutil.which(self.settings.claude_bin, path=env.get("PATH"))
        if binary is None:
            raise CLIUnavailable(
                f"the Claude Code CLI was not found ({self.settings.claude_bin!r}); install it with "
                "`npm install -g @anthropic-ai/claude-code` or set CLAUDE_BIN"
            )
        argv = self.argv(model, resume.session_id if resume else None, options)
        session, tools = None, options.tools
        if tools:
            bridge = await self._mcp_bridge()
            session = ToolSession(tools, self.settings.tool_result_timeout, server=options.tools_server)
            argv += ["--mcp-config", str(bridge.open(session))]
            if options.tools_server != MCP_SERVER:  # the daemon's own tools (the bot's send_file) need no approval
                argv += ["--allowedTools", f"mcp__{options.tools_server}"]
            env["ENABLE_TOOL_SEARCH"] = "false"  # the tools' schemas in the request, not behind ToolSearch
            env["MCP_TOOL_TIMEOUT"] = str(int((self.settings.tool_result_timeout + 60) * 1000))
        spawn = Spawn(argv=[*death_signal_prefix(), binary, *argv[1:]], cwd=self.workdir(resume, options), env=env)
        process = CLIProcess(
            spawn, activity_timeout=self.settings.activity_timeout, kill_grace=self.settings.kill_grace
        )
        if session is not None:
            process.tool_session = session
            process.on_stop = lambda: bridge.close(session)
        try:
            await process.start()
        except BaseException:
            if process.on_stop is not None:
                process.on_stop()
            raise
        return process

    async def process_for(
        self, key: str, model: str, resume: Conversation | None, options: LaunchOptions
    ) -> tuple[CLIProcess, str]:
        """A process for a turn, and where it came from: "warm", "spare" or "cold"."""
        signature = self.signature(model, self.workdir(resume, options), options)
        if resume is not None:
            warm = self.pool.take(key, resume.session_id, signature)
            if warm is not None:
                return warm, "warm"
        elif self.pool.spare_target and self.accepting and not options.tools:
            spare = self.pool.take_spare(signature)
            self.pool.refill(self._start_spare)
            if spare is not None:
                return spare, "spare"
        return await self.start(model, resume, options), "cold"

    def keep(self, key: str, process: CLIProcess, session_id: str, model: str, options: LaunchOptions) -> None:
        """Keep a process for the conversation's next turn, which will resume `session_id`."""
        self.pool.put(key, process, session_id, self.signature(model, process.cwd, options))

    async def _mcp_bridge(self) -> McpBridge:
        if self._bridge is None:
            from core.mcp_bridge import McpBridge  # the MCP stack (starlette, uvicorn) is big: load it when needed

            self._bridge = McpBridge(self.settings.state_dir / "mcp")
        await self._bridge.start()
        return self._bridge

    async def _start_spare(self) -> tuple[CLIProcess, Signature]:
        """A process for a new HTTP conversation (spares serve the HTTP face's mode)."""
        model, options = self.settings.default_model, LaunchOptions(mode=self.settings.proxy_permission_mode)
        process = await self.start(model, None, options)
        return process, self.signature(model, self.settings.workdir, options)
