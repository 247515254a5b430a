"""The engine: turns on Claude Code sessions, shared by every face of the daemon.

A face builds a `TurnRequest`, enters `engine.turn(request)` (which waits for the
conversation's previous turn, takes a CLI slot and spawns the CLI, or raises) and
iterates the events. The engine resumes the conversation's session when it can,
starts a fresh one carrying the history when it cannot, records the mapping only
after the CLI reported success, and never leaves a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import math
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from core.answer import AnswerBuilder, AnswerDelta
from core.client_tools import ClientTool, ClientToolCall, ClientToolsPending, ToolSession, tools_digest
from core.config import RETRY_AFTER_SECONDS, Settings
from core.describe import describe_tool
from core.errors import (
    ActivityTimeout,
    CancelReason,
    CLIUnavailable,
    EngineError,
    Saturated,
    SessionNotFound,
    ShuttingDown,
    TurnCancelled,
    TurnFailed,
    UpstreamError,
)
from core.events import (
    ApiError,
    ApiRetry,
    AssistantText,
    Event,
    MessageStart,
    NotJSON,
    RateLimit,
    Result,
    SessionInit,
    StopReason,
    ToolResult,
    ToolStart,
    Usage,
    parse_event,
)
from core.hygiene import INSTANCE_VARIABLE, STATE_VARIABLE, StateLock, death_signal_prefix, reap_leftovers, state_key
from core.process import CLIProcess, Spawn
from core.store import Conversation, LedgerEntry, SessionStore, StoreError
from core.transcript import Transcript
from core.warm import Signature, WarmPool

if TYPE_CHECKING:
    from core.mcp_bridge import McpBridge

log = logging.getLogger("core.engine")


Prompt = str | list[dict[str, Any]]
TurnEvent = Event | AnswerDelta | ClientToolCall | ClientToolsPending

_NOT_LOGGED_IN = ("not logged in", "please run /login", "invalid api key")
_ROOT_REFUSED = "cannot be used with root/sudo privileges"


@dataclass(frozen=True)
class TurnRequest:
    """One user turn, as a face asks for it.

    `prompt_for` gets the conversation about to be resumed, or None when a fresh session
    starts (so the prompt must carry whatever history the face has).
    `key` names the conversation explicitly; without it the engine looks for the session
    whose recorded transcript holds `history` (the history the face was sent).
    `head_after(answer)` is the transcript once the answer is part of the history.
    """

    prompt_for: Callable[[Conversation | None], Prompt]
    key: str | None = None
    history: Transcript | None = None
    model: str = ""
    head_after: Callable[[str], Transcript | None] | None = None
    context: str | None = None
    face: str = "http"
    tools: tuple[ClientTool, ...] = ()  # the client's own tools, offered to Claude over MCP
    # Wait for a CLI slot as long as it takes (in arrival order with every other turn) instead of QUEUE_WAIT:
    # for a face that keeps its user waiting anyway (a chat), not for an HTTP client that can retry.
    patient: bool = False
    on_queued: Callable[[], None] | None = None  # called when the turn has to wait for a slot


class EngineState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    DRAINING = "draining"  # running turns may finish; no new ones start
    STOPPING = "stopping"  # running turns are being cancelled
    CLOSED = "closed"


TurnListener = Callable[["Turn", BaseException | None], Awaitable[None]]


class Engine:
    """Build once per daemon; `async with Engine(settings) as engine:` opens the store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SessionStore(settings.state_dir)
        self.state = EngineState.NEW
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self._turns: set[Turn] = set()
        self._no_turns = asyncio.Event()  # set whenever the last running turn ends
        self._finishing: set[asyncio.Task[None]] = set()
        self._listeners: list[TurnListener] = []
        self.waiting = 0
        self.instance = uuid.uuid4().hex
        self._state_lock = StateLock(settings.state_dir)
        self._child_marks = {STATE_VARIABLE: state_key(settings.state_dir), INSTANCE_VARIABLE: self.instance}
        self._bridge: McpBridge | None = None  # started when a client first offers its tools
        self.pool = WarmPool(
            capacity=settings.warm_max,
            idle_seconds=settings.warm_idle,
            spares=settings.warm_spares,
            background=self._background,
        )

    async def __aenter__(self) -> Engine:
        if self.state is not EngineState.NEW:
            raise RuntimeError(f"engine is {self.state.value}; build a new one")
        try:
            self.settings.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the working directory {self.settings.workdir} (CLAUDE_WORKDIR): {exc}"
            ) from exc
        self._state_lock.acquire()
        try:
            await self.store.open()
        except BaseException:
            self._state_lock.release()
            raise
        reap_leftovers(self._child_marks[STATE_VARIABLE], self.instance)
        self.state = EngineState.OPEN
        self.pool.refill(self._start_spare)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on_turn_end(self, listener: TurnListener) -> None:
        """Call `listener(turn, error)` after every turn, in the background (alerts, metrics)."""
        self._listeners.append(listener)

    async def cancel_all(self, reason: CancelReason) -> None:
        """Stop every running turn; their consumers see `TurnCancelled`."""
        await asyncio.gather(*(turn.cancel(reason) for turn in list(self._turns)))

    async def drain(self, grace: float) -> None:
        """Refuse new turns and give the running ones up to `grace` seconds to finish."""
        if self.state is EngineState.OPEN:
            self.state = EngineState.DRAINING
        if self._turns:
            self._no_turns.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._no_turns.wait()

    async def shut_down(self) -> None:
        """Refuse new turns and cancel the running ones; the store stays open until `close()`."""
        if self.state in (EngineState.OPEN, EngineState.DRAINING):
            self.state = EngineState.STOPPING
        await self.cancel_all(CancelReason.SHUTDOWN)

    async def close(self) -> None:
        if self.state is EngineState.CLOSED:
            return
        await self.shut_down()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.kill_grace + 5):
                while self._turns or self._finishing:  # consumers are leaving their turns
                    await asyncio.gather(*self._finishing, return_exceptions=True)
                    await asyncio.sleep(0.01)
        self.state = EngineState.CLOSED
        await self.pool.close()
        if self._bridge is not None:
            await self._bridge.stop()
        await self.store.close()
        self._state_lock.release()

    @property
    def running(self) -> int:
        """Turns in progress; a turn waiting for a client's tool results is not one (it holds no slot)."""
        return sum(1 for turn in self._turns if not turn.awaiting_client)

    @property
    def waiting_for_clients(self) -> int:
        """Turns waiting for a client's tool results."""
        return len(self._turns) - self.running

    async def forget(self, key: str) -> bool:
        """Drop a conversation: its session mapping and its warm process."""
        self.pool.evict(key, "forgotten")
        return await self.store.forget(key)

    def turn(self, request: TurnRequest) -> Turn:
        """A turn to enter. Raises `TurnCancelled` while shutting down, `RuntimeError` when not open."""
        if self.state in (EngineState.DRAINING, EngineState.STOPPING):
            raise ShuttingDown(CancelReason.SHUTDOWN.value)
        if self.state is not EngineState.OPEN:
            raise RuntimeError(f"engine is {self.state.value}")
        return Turn(self, request)

    def _background(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return task

    async def _turn_ended(self, turn: Turn, error: BaseException | None) -> None:
        for listener in self._listeners:
            try:
                await listener(turn, error)
            except Exception:
                log.exception("turn_listener_failed conversation=%s", turn.key)

    # -- used by Turn -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conversation_lock(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._lock_users[key] = self._lock_users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[key] -= 1
            if not self._lock_users[key]:
                del self._lock_users[key]
                del self._locks[key]

    async def _acquire_slot(self, request: TurnRequest) -> None:
        self.waiting += 1
        try:
            if self._slots.locked() and request.on_queued is not None:
                request.on_queued()
            async with asyncio.timeout(None if request.patient else self.settings.queue_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise Saturated(
                f"all {self.settings.max_concurrent} Claude Code slots are busy; try again shortly",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None
        finally:
            self.waiting -= 1

    def _release_slot(self) -> None:
        self._slots.release()

    def _argv(self, model: str, resume: str | None) -> list[str]:
        s = self.settings
        argv = [
            s.claude_bin, "-p",
            "--input-format", "stream-json",
            "--output-format", "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--permission-mode", s.claude_permission_mode,
        ]  # fmt: skip
        if model:
            argv += ["--model", model]
        if s.claude_max_turns:
            argv += ["--max-turns", str(s.claude_max_turns)]
        if resume:
            argv += ["--resume", resume]
        return argv

    def _workdir(self, resume: Conversation | None) -> Path:
        if resume is not None and Path(resume.workdir).is_dir():
            return Path(resume.workdir)  # the CLI keeps sessions per project directory
        return self.settings.workdir

    def _signature(self, model: str, workdir: Path, tools: tuple[ClientTool, ...] = ()) -> Signature:
        """What a process was started with; a warm process serves only turns that want the same."""
        s = self.settings
        return (model, str(workdir), s.claude_bin, s.claude_permission_mode, s.claude_max_turns, tools_digest(tools))

    async def _start_process(
        self, model: str, resume: Conversation | None, tools: tuple[ClientTool, ...] = ()
    ) -> CLIProcess:
        env = {**self.settings.child_environment(), **self._child_marks}
        binary = shutil.which(self.settings.claude_bin, path=env.get("PATH"))
        if binary is None:
            raise CLIUnavailable(
                f"the Claude Code CLI was not found ({self.settings.claude_bin!r}); install it with "
                "`npm install -g @anthropic-ai/claude-code` or set CLAUDE_BIN"
            )
        argv = self._argv(model, resume.session_id if resume else None)
        session = None
        if tools:
            bridge = await self._mcp_bridge()
            session = ToolSession(tools, result_timeout=self.settings.tool_result_timeout)
            argv += ["--mcp-config", str(bridge.open(session))]
            env["ENABLE_TOOL_SEARCH"] = "false"  # the tools' schemas in the request, not behind ToolSearch
            env["MCP_TOOL_TIMEOUT"] = str(int((self.settings.tool_result_timeout + 60) * 1000))
        spawn = Spawn(argv=[*death_signal_prefix(), binary, *argv[1:]], cwd=self._workdir(resume), env=env)
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

    async def _mcp_bridge(self) -> McpBridge:
        if self._bridge is None:
            from core.mcp_bridge import McpBridge  # the MCP stack (starlette, uvicorn) is big: load it when needed

            self._bridge = McpBridge(self.settings.state_dir / "mcp")
        await self._bridge.start()
        return self._bridge

    async def _start_spare(self) -> tuple[CLIProcess, Signature]:
        model = self.settings.default_model
        process = await self._start_process(model, None)
        return process, self._signature(model, self.settings.workdir)

    async def _process_for(self, turn: Turn, resume: Conversation | None) -> tuple[CLIProcess, str]:
        """A process for a turn, and where it came from: "warm", "spare" or "cold"."""
        tools = turn.request.tools
        signature = self._signature(turn.model, self._workdir(resume), tools)
        if resume is not None:
            warm = self.pool.take(turn.key, resume.session_id, signature)
            if warm is not None:
                return warm, "warm"
        elif self.pool.spare_target and self.state is EngineState.OPEN and not tools:
            spare = self.pool.take_spare(signature)
            self.pool.refill(self._start_spare)
            if spare is not None:
                return spare, "spare"
        return await self._start_process(turn.model, resume, tools), "cold"


def _holds(record: Conversation, history: Transcript) -> bool:
    return record.transcript is not None and record.transcript.holds(history)


# The values of a turn's `outcome` (a metric label, so a fixed set).
OUTCOMES = (
    "ok", "error_max_turns", "cancelled", "timeout", "failed", "upstream_error", "not_logged_in",
    "saturated", "unavailable", "shutting_down", "error",
)  # fmt: skip


def _outcome_of(exc: BaseException) -> str:
    """The outcome of a turn that ended in `exc`."""
    if isinstance(exc, (asyncio.CancelledError, ConnectionError, TurnCancelled)):
        return "cancelled"
    kinds: list[tuple[type[BaseException], str]] = [
        (ActivityTimeout, "timeout"), (Saturated, "saturated"), (ShuttingDown, "shutting_down"),
        (CLIUnavailable, "unavailable"), (UpstreamError, "upstream_error"), (TurnFailed, "failed"),
    ]  # fmt: skip
    return next((outcome for kind, outcome in kinds if isinstance(exc, kind)), "error")


class _WarmProcessLost(Exception):
    """A warm process ended before it printed anything for this turn."""


class Turn:
    """One running turn. Enter to start it, iterate for events; leaving always cleans up."""

    def __init__(self, engine: Engine, request: TurnRequest) -> None:
        self._engine = engine
        self.request = request
        self.key = request.key or ""
        self.resumed: Conversation | None = None
        self.model = ""
        self.model_reported = ""
        self.session_id: str | None = None
        self.result: Result | None = None
        self.answer = AnswerBuilder()
        self.started = time.monotonic()
        self.finished: float | None = None
        self.outcome = "started"
        self._process: CLIProcess | None = None
        self.source = "cold"  # where the process came from: cold, warm or spare
        self._lock_cm: contextlib.AbstractAsyncContextManager[None] | None = None
        self._has_slot = False
        self._cancel_reason: CancelReason | None = None
        self.first_token_after: float | None = None  # seconds from the request to the first answer text
        self.last_tool = ""  # the main thread's latest tool call, described for people
        self._client_calls: list[ClientToolCall] = []  # of Claude's current message
        self.awaiting_client: tuple[ClientToolCall, ...] = ()  # handed to the client, not yet answered
        self._retry_after: int | None = None  # seconds the upstream asked to wait, as the CLI's events tell
        self._usage_seen = Usage()  # of the main thread's API messages so far
        self._usage_reported = Usage()  # the part of it already reported with client tool calls
        self._debug = engine.settings.debug_enabled

    # -- entering: lock, slot, spawn ----------------------------------------------

    async def __aenter__(self) -> Turn:
        engine, request = self._engine, self.request
        try:
            await self._lock_conversation()
            await self._take_slot()
            self.model = request.model or (self.resumed.model if self.resumed else "") or engine.settings.default_model
            await self._spawn(self.resumed)
        except BaseException as exc:
            # A turn that never started (no slot, no CLI, cancelled while waiting) is logged and counted too.
            self.outcome = _outcome_of(exc)
            self.finished = time.monotonic()
            await self._release()
            self._log()
            engine._background(engine._turn_ended(self, exc))
            raise
        engine._turns.add(self)
        return self

    async def _take_slot(self) -> None:
        await self._engine._acquire_slot(self.request)
        self._has_slot = True

    def _free_slot(self) -> None:
        if self._has_slot:
            self._has_slot = False
            self._engine._release_slot()

    async def _lock_conversation(self) -> None:
        engine, request = self._engine, self.request
        store = engine.store
        if not request.key and request.history:
            found = await store.find_holding(request.history)
            if found is not None:
                self.key = found.key
        if not self.key:
            self.key = f"{request.face}:{uuid.uuid4()}"
        self._lock_cm = engine._conversation_lock(self.key)
        await self._lock_cm.__aenter__()
        record = await store.get(self.key)
        if record is not None and (request.history is None or _holds(record, request.history)):
            self.resumed = record
        elif record is not None and not request.key:
            # The conversation moved on while we waited (a retry or a branch): fork it off.
            await self._lock_cm.__aexit__(None, None, None)
            self.key = f"{request.face}:{uuid.uuid4()}"
            self._lock_cm = engine._conversation_lock(self.key)
            await self._lock_cm.__aenter__()

    async def _spawn(self, resume: Conversation | None) -> None:
        """Get a process (warm, spare or new) and hand it this turn's user message."""
        message = {
            "type": "user",
            "message": {"role": "user", "content": self.request.prompt_for(resume)},
            "parent_tool_use_id": None,
            "session_id": "",
        }
        process, self.source = await self._engine._process_for(self, resume)
        self._process = process
        process.touch()
        if not await process.send(message) and self.source != "cold":
            # A warm process that died between turns: replace it with a cold --resume, unseen by the caller.
            await process.stop()
            process = self._process = await self._engine._start_process(self.model, resume, self.request.tools)
            self.source = "cold"
            await process.send(message)

    # -- iterating -----------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[TurnEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[TurnEvent]:
        try:
            async for event in self._run_process():
                yield event
            return
        except SessionNotFound:
            if self.resumed is None or self.first_token_after is not None:
                raise
            log.info("session_not_found conversation=%s session=%s fresh=true", self.key, self.resumed.session_id)
            lost, self.resumed = self.resumed, None
            self.model = self.request.model or lost.model or self._engine.settings.default_model
        except _WarmProcessLost:
            log.info("warm_process_lost conversation=%s; resuming cold", self.key)
        assert self._process is not None
        await self._process.stop()
        self.source = "cold"
        await self._spawn(self.resumed)
        async for event in self._run_process():
            yield event

    async def _run_process(self) -> AsyncIterator[TurnEvent]:
        process = self._process
        assert process is not None
        seen_any = False
        try:
            while (line := await process.next_line()) is not None:
                try:
                    events = parse_event(line)
                except NotJSON:
                    log.warning("cli_non_json_line conversation=%s line=%r", self.key, line[:200])
                    continue
                seen_any = True
                for event in events:
                    if self._debug:
                        log.debug("cli_event conversation=%s event=%.300r", self.key, event)
                    self._observe(event, process)
                    if isinstance(event, Result):
                        await self._finish(event)
                        yield event
                        return
                    call = await self._client_call(event, process)
                    if call is not None:
                        yield call
                        continue
                    yield event
                    if isinstance(event, StopReason) and event.reason == "tool_use" and self._client_calls:
                        # Claude's message is complete: hand its client calls to the client, and wait. A turn
                        # waiting for a client is not running: its slot is free until `continue_with`.
                        self.awaiting_client = tuple(self._client_calls)
                        self._client_calls.clear()
                        self._free_slot()
                        yield ClientToolsPending(self.awaiting_client, self.unreported(self._usage_seen))
                        process.touch()  # the client took its time; that was not the CLI's silence
                    delta = self.answer.feed(event)
                    if delta is not None:
                        if self.first_token_after is None:
                            self.first_token_after = time.monotonic() - self.started
                        yield delta
        except ActivityTimeout as exc:
            exc.session_id = self.session_id
            self.outcome = "timeout"
            raise
        # stdout ended without a result.
        if self._cancel_reason is not None:
            self.outcome = "cancelled"
            raise TurnCancelled(self._cancel_reason, session_id=self.session_id)
        if self.source != "cold" and not seen_any:
            raise _WarmProcessLost
        code = await process.wait_exit(self._engine.settings.kill_grace)
        raise self._exit_error(code, process.stderr_tail)

    async def _client_call(self, event: Event, process: CLIProcess) -> ClientToolCall | None:
        """A main-thread call of one of the client's tools, as the face will return it."""
        session = process.tool_session
        if session is None or not isinstance(event, ToolStart):
            return None
        tool = session.by_cli_name(event.name)
        if tool is None:
            return None
        if event.parent_tool_use_id is not None:
            await session.refuse(tool, event.input)
            return None
        await session.expect(event.tool_use_id, tool, event.input)
        call = ClientToolCall(event.tool_use_id, tool.name, json.dumps(event.input, ensure_ascii=False))
        self._client_calls.append(call)
        return call

    def unreported(self, usage: Usage) -> Usage:
        """The part of `usage` (the turn's so far, or its result's) not yet reported to the client, which
        is reported now: each response of a turn split by client tool calls carries its own share."""
        share = usage - self._usage_reported
        self._usage_reported = usage
        return share

    async def continue_with(self, results: dict[str, tuple[str, bool]]) -> None:
        """Go on after the client's tool results: wait for a slot again (`Saturated` leaves the turn waiting
        for the results), then hand them to Claude."""
        await self._take_slot()
        self.answer_client_calls(results)

    def answer_client_calls(self, results: dict[str, tuple[str, bool]]) -> None:
        """The client's results for the calls it was given; a call it did not answer gets an error."""
        session = self._process.tool_session if self._process else None
        if session is None:
            return
        for call in self.awaiting_client:
            text, is_error = results.get(call.call_id, ("The client sent no result for this tool call.", True))
            session.answer(call.call_id, text, is_error)
        self.awaiting_client = ()

    def _observe(self, event: Event, process: CLIProcess) -> None:
        if isinstance(event, SessionInit):
            self.session_id = event.session_id
            if event.model:
                self.model_reported = event.model
            process.note("started the session")
        elif isinstance(event, MessageStart) and event.parent_tool_use_id is None:
            self._usage_seen += event.usage
            if event.model:
                self.model_reported = event.model
            process.note("waiting for the model")
        elif isinstance(event, StopReason) and event.parent_tool_use_id is None:
            self._usage_seen += event.usage
        elif isinstance(event, AssistantText) and event.parent_tool_use_id is None and event.model:
            if event.model != "<synthetic>":
                self.model_reported = event.model
        elif isinstance(event, ToolStart):
            process.note(f"tool {event.name}")
            if event.parent_tool_use_id is None:
                self.last_tool = describe_tool(event.name, event.input)
        elif isinstance(event, ToolResult):
            process.note("tool result")
        elif isinstance(event, ApiRetry):
            process.note(f"API retry {event.attempt}/{event.max_retries} after {event.error_status or event.error}")
            log.info("api_retry conversation=%s attempt=%s status=%s", self.key, event.attempt, event.error_status)
            if event.error_status == 429:
                # The CLI waits the upstream's Retry-After plus up to 25% jitter (or its own backoff, if longer).
                self._retry_after = max(1, event.delay_ms // 1000)
        elif isinstance(event, RateLimit) and event.status == "rejected" and event.resets_at:
            self._retry_after = max(1, math.ceil(event.resets_at - time.time()))  # when the window opens again
        elif isinstance(event, ApiError):
            process.note(f"API error {event.status}")

    async def _finish(self, result: Result) -> None:
        """Check the CLI's verdict, account for the turn, and record the session only when it succeeded."""
        self.result = result
        self.session_id = result.session_id or self.session_id
        if any("No conversation found" in error for error in result.errors):
            raise SessionNotFound("; ".join(result.errors), session_id=self.session_id)
        if self._cancel_reason is not None:  # the interrupted turn's last word
            self.outcome = "cancelled"
            await self._account(result)
            raise TurnCancelled(self._cancel_reason, session_id=self.session_id)
        error = self._result_error(result)
        if error:
            self.outcome = error[0]
        else:
            self.outcome = "ok" if not result.is_error else result.subtype if result.subtype in OUTCOMES else "failed"
        if error:
            await self._account(result)
            raise error[1]
        if not self.answer.text and result.text:
            self.answer.parts.append(result.text)
        request = self.request
        head = request.head_after(self.answer.text) if request.head_after else None
        await self._engine.store.record(
            self.key,
            session_id=result.session_id,
            model=self.model,
            workdir=str(self._process.cwd if self._process else self._engine.settings.workdir),
            head=head,
            context=request.context,
            ledger=self._ledger_entry(result),
        )

    def _result_error(self, result: Result) -> tuple[str, EngineError] | None:
        """(outcome, error) when the result is a failure; an answer cut by a limit is not one."""
        truncated = result.api_error_kind == "max_output_tokens"
        if not result.is_error or truncated or result.subtype == "error_max_turns":
            return None
        if result.terminal_reason == "api_error" or result.api_error_status:
            if result.api_error_status is None and any(m in result.text.lower() for m in _NOT_LOGGED_IN):
                message = f"the Claude Code CLI is not logged in: {result.text}"
                return "not_logged_in", CLIUnavailable(message, session_id=self.session_id)
            error = UpstreamError(
                result.text or "the Anthropic API failed",
                status=result.api_error_status,
                kind=result.api_error_kind,
                session_id=self.session_id,
                retry_after=self._retry_after,
            )
            return "upstream_error", error
        detail = "; ".join(result.errors) or result.text or result.subtype
        stderr = self._process.stderr_tail if self._process else ""
        return "failed", TurnFailed(f"the Claude Code CLI failed: {detail}", session_id=self.session_id, stderr=stderr)

    def _ledger_entry(self, result: Result) -> LedgerEntry:
        usage = result.usage
        return LedgerEntry(
            key=self.key, face=self.request.face, model=self.model_reported or self.model or "default",
            duration_ms=int(self.elapsed * 1000), prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.output_tokens, cached_tokens=usage.cache_read_tokens,
            cost_usd=result.cost_usd, outcome=self.outcome,
        )  # fmt: skip

    async def _account(self, result: Result) -> None:
        """The tokens and cost of a turn that did not succeed, in the ledger all the same."""
        try:
            await self._engine.store.add_turn(self._ledger_entry(result))
        except Exception:
            log.exception("ledger_write_failed conversation=%s", self.key)

    def _exit_error(self, code: int | None, stderr: str) -> EngineError:
        self.outcome = "failed"
        if "No conversation found" in stderr:
            return SessionNotFound(stderr, session_id=self.session_id, stderr=stderr)
        if _ROOT_REFUSED in stderr:
            return CLIUnavailable(
                "the Claude Code CLI refuses bypassPermissions as root; set IS_SANDBOX=1 in its environment "
                "or choose another CLAUDE_PERMISSION_MODE",
                stderr=stderr,
            )
        if any(marker in stderr.lower() for marker in _NOT_LOGGED_IN):
            return CLIUnavailable(f"the Claude Code CLI is not logged in: {stderr}", stderr=stderr)
        detail = stderr.splitlines()[-1] if stderr else "no output on stderr"
        return TurnFailed(
            f"the Claude Code CLI exited with status {code} without an answer: {detail}",
            session_id=self.session_id,
            stderr=stderr,
        )

    # -- leaving -------------------------------------------------------------------

    async def cancel(self, reason: CancelReason) -> None:
        """Stop the turn now; iteration ends in `TurnCancelled`.

        A persistent CLI gets an interrupt and stays warm for the conversation's next turn
        (it stops the running tool and its children). If it does not settle within the
        grace period, or the daemon is shutting down, its process group is killed.
        """
        if self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        process = self._process
        if process is None:
            return
        if process.tool_session is not None:
            process.tool_session.abandon(f"the turn was stopped: {reason.value}")
        if (
            reason is not CancelReason.SHUTDOWN
            and self._engine.pool.capacity
            and process.alive
            and await process.interrupt()
        ):
            self._engine._background(self._kill_unless_settled(process))
            return
        await process.stop()

    async def _kill_unless_settled(self, process: CLIProcess) -> None:
        await asyncio.sleep(self._engine.settings.kill_grace)
        if self.result is None and process is self._process:
            log.info("interrupt_ignored conversation=%s; killing the CLI", self.key)
            await process.stop()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        engine = self._engine
        self.finished = time.monotonic()
        if exc is not None and self.outcome in ("started", "ok"):
            self.outcome = _outcome_of(exc)
        elif self.outcome == "started":
            self.outcome = "cancelled"  # left before its result
        released = engine._background(self._release(exc))
        engine._turns.discard(self)
        if not engine._turns:
            engine._no_turns.set()
        engine._background(self._after(released, exc))
        if self.result is None or exc is not None:
            # The caller waits until the process is settled (interrupted and warm again, or gone).
            await asyncio.shield(released)

    async def _after(self, released: asyncio.Task[None], error: BaseException | None) -> None:
        with contextlib.suppress(Exception):
            await released
        self._log()
        await self._engine._turn_ended(self, error)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    async def _release(self, error: BaseException | None = None) -> None:
        """Put the process back (warm) or end it; then free the slot and the conversation."""
        try:
            process = self._process
            if process is not None:
                if await self._settle(process, error):
                    self._keep_warm(process)
                else:
                    await self._end(process)
        finally:
            self._free_slot()
            if self._lock_cm is not None:
                cm, self._lock_cm = self._lock_cm, None
                await cm.__aexit__(None, None, None)

    async def _settle(self, process: CLIProcess, error: BaseException | None) -> bool:
        """Whether the process ended its turn cleanly and may serve the next one."""
        engine = self._engine
        if not engine.pool.capacity or engine.state is not EngineState.OPEN or not process.alive:
            return False
        if isinstance(error, (ActivityTimeout, TurnFailed, UpstreamError, CLIUnavailable)):
            return False
        if self.result is not None:
            return True
        # The caller left mid-turn (a disconnect): interrupt, and read on to the turn's result.
        if self._cancel_reason is None:
            self._cancel_reason = CancelReason.CLIENT_GONE
            if not await process.interrupt():
                return False
        try:
            async with asyncio.timeout(engine.settings.kill_grace):
                while (line := await process.next_line(watch=False)) is not None:
                    with contextlib.suppress(NotJSON):
                        for event in parse_event(line):
                            if isinstance(event, Result):
                                self.result = event
                                await self._account(event)
                                return True
        except TimeoutError:
            pass
        return False

    def _keep_warm(self, process: CLIProcess) -> None:
        """Keep the process for this conversation's next turn, if that turn would resume its session."""
        engine = self._engine
        session_id = self.session_id or ""
        recorded = self.outcome in ("ok", "error_max_turns") or (
            self.resumed is not None and self.resumed.session_id == session_id
        )
        if not recorded or not session_id:
            engine._background(process.stop())
            return
        workdir = process.cwd
        engine.pool.put(self.key, process, session_id, engine._signature(self.model, workdir, self.request.tools))

    async def _end(self, process: CLIProcess) -> None:
        if self.result is not None and process.alive:
            process.close_stdin()  # a clean end of input; the CLI exits on its own
            await process.wait_exit(self._engine.settings.kill_grace)
        await process.stop()  # and sweeps up whatever it left running

    def _log(self) -> None:
        result = self.result
        usage = result.usage if result else None
        log.info(
            "turn face=%s conversation=%s session=%s model=%s resumed=%s process=%s outcome=%s duration_ms=%d "
            "prompt_tokens=%s completion_tokens=%s cost_usd=%s",
            self.request.face,
            self.key,
            self.session_id,
            self.model_reported or self.model or "default",
            self.resumed is not None,
            self.source,
            self.outcome,
            self.elapsed * 1000,
            usage.prompt_tokens if usage else 0,
            usage.output_tokens if usage else 0,
            f"{result.cost_usd:.6f}" if result else "0",
        )
