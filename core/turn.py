"""One turn: a user message to a Claude Code session, and the events of its answer.

A face builds a `TurnRequest` and enters `engine.turn(request)`; entering waits for the
conversation's previous turn, takes a CLI slot and gets a process (warm, spare or new),
or raises. Iterating yields the face-level events of `core.turn_events`. Leaving always
cleans up: the process is kept warm for the conversation's next turn or ended, the slot
and the conversation are freed, and the turn is logged and counted.

The turn owns none of what it shares with other turns: the engine hands it a
`TurnContext` (the store, the CLI slots, the conversation locks, the launch spec and the
tracker of running turns), and the verdict on the CLI's result or exit is `core.verdict`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from core.answer import AnswerBuilder
from core.approvals import (
    ASKS_THE_USER,
    Approvals,
    Decision,
    PermissionPrompt,
    changes_mode,
    control_error,
    permission_answer,
)
from core.capacity import ConversationLocks, Slots
from core.client_tools import MCP_SERVER, ClientTool
from core.config import Settings
from core.describe import describe_tool
from core.errors import (
    ActivityTimeout,
    CancelReason,
    CLIUnavailable,
    LimitReached,
    NoStructuredAnswer,
    SessionNotFound,
    StoreError,
    TurnCancelled,
    TurnFailed,
    UpstreamError,
)
from core.events import (
    ApiError,
    ApiRetry,
    AssistantText,
    ControlRequest,
    Event,
    MessageStart,
    NotJSON,
    RateLimit,
    Result,
    SessionInit,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolResult,
    ToolStart,
    Usage,
    parse_event,
)
from core.launcher import Launcher, LaunchOptions
from core.limits import SubscriptionLimits, WindowState
from core.models import answer_model
from core.process import CLIProcess
from core.store import Conversation, LedgerEntry, SessionStore
from core.transcript import Transcript
from core.turn_events import (
    AnswerDelta,
    ApprovalDone,
    ApprovalWaiting,
    ClientToolCall,
    ClientToolsPending,
    Finished,
    Reasoning,
    ToolActivity,
    TurnEvent,
)
from core.verdict import exit_error, outcome_of, result_error, result_outcome, session_unknown, truncated

STRUCTURED_OUTPUT_TOOL = "StructuredOutput"  # the CLI's tool for a `--json-schema` answer

log = logging.getLogger("core.engine")  # the turn's lines keep the logger name operators filter on

Prompt = str | list[dict[str, Any]]
HeadAfter = Callable[[str], Transcript | None]


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
    model: str = ""  # the CLI's --model; empty: the conversation's, else DEFAULT_MODEL
    model_asked: str = ""  # what the client called the model, reported back in its answers (see `answer_model`)
    head_after: HeadAfter | None = None
    context: str | None = None
    face: str = "http"
    tools: tuple[ClientTool, ...] = ()  # the client's own tools, offered to Claude over MCP
    permission_mode: str = ""  # `ask` or one of the CLI's modes; empty: CLAUDE_PERMISSION_MODE
    dialect: str = ""  # the API the face speaks (chat, responses, messages), for metrics and logs
    output_schema: str = ""  # a JSON Schema (JSON text): the answer is an instance of it, as JSON text
    effort: str = ""  # the CLI's --effort (low, medium, high, xhigh, max); empty: the CLI's default
    workdir: str = ""  # where a new session of the conversation starts (a project); empty: CLAUDE_WORKDIR
    tools_server: str = MCP_SERVER  # the MCP server `tools` are offered under: mcp__<server>__<name>
    # Wait for a CLI slot as long as it takes (in arrival order with every other turn) instead of QUEUE_WAIT:
    # for a face that keeps its user waiting anyway (a chat), not for an HTTP client that can retry.
    patient: bool = False
    on_queued: Callable[[], None] | None = None  # called when the turn has to wait for a slot


TurnListener = Callable[["Turn", BaseException | None], Awaitable[None]]


class TurnTracker:
    """The turns in progress, the work they leave running in the background, and who hears of their ends."""

    def __init__(self) -> None:
        self.turns: set[Turn] = set()
        self.idle = asyncio.Event()  # set whenever the last running turn ends
        self.idle.set()
        self.finishing: set[asyncio.Task[None]] = set()
        self.listeners: list[TurnListener] = []

    def background(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self.finishing.add(task)
        task.add_done_callback(self.finishing.discard)
        return task

    def add(self, turn: Turn) -> None:
        self.turns.add(turn)
        self.idle.clear()

    def discard(self, turn: Turn) -> None:
        self.turns.discard(turn)
        if not self.turns:
            self.idle.set()

    async def ended(self, turn: Turn, error: BaseException | None) -> None:
        for listener in self.listeners:
            try:
                await listener(turn, error)
            except Exception:
                log.exception("turn_listener_failed conversation=%s", turn.key)


@dataclass(frozen=True)
class TurnContext:
    """What a turn shares with the others, built once by the engine."""

    settings: Settings
    store: SessionStore
    slots: Slots
    locks: ConversationLocks
    launcher: Launcher
    approvals: Approvals
    tracker: TurnTracker = field(default_factory=TurnTracker)
    limits: SubscriptionLimits = field(default_factory=SubscriptionLimits)


def _holds(record: Conversation, history: Transcript) -> bool:
    return record.transcript is not None and record.transcript.holds(history)


class _WarmProcessLost(Exception):
    """A warm process ended before it printed anything for this turn."""


class Turn:
    """One running turn. Enter to start it, iterate for its events; leaving always cleans up."""

    def __init__(self, context: TurnContext, request: TurnRequest) -> None:
        self._ctx = context
        self.request = request
        self.key = request.key or ""
        self.resumed: Conversation | None = None
        self.model = ""  # the CLI's --model
        self.model_wanted = ""  # the model asked for, before a LIMIT_FALLBACK rule moved it (then `model`)
        self.fallback_reason = ""  # why it moved: "five_hour window at 91%"
        self.model_reported = ""  # the model that answered, as the CLI said
        self.session_id: str | None = None
        self.result: Result | None = None
        # A structured turn's answer is the JSON the CLI hands over at its end; its prose is nobody's answer.
        self.answer = AnswerBuilder(quiet=bool(request.output_schema))
        self.options = LaunchOptions(
            request.tools,
            request.permission_mode,
            request.output_schema,
            request.effort,
            request.workdir,
            request.tools_server,
        )
        self.started = time.monotonic()
        self.finished: float | None = None
        self.outcome = "started"
        self.source = "cold"  # where the process came from: cold, warm or spare
        self.first_token_after: float | None = None  # seconds from the request to the first answer text
        self.last_tool = ""  # the main thread's latest tool call, described for people
        self.awaiting_client: tuple[ClientToolCall, ...] = ()  # handed to the client, not yet answered
        self._head_after = request.head_after
        self._kept_unanswered = False  # a stopped turn's session, kept for the conversation (see _release)
        self._process: CLIProcess | None = None
        self._conversation: contextlib.AsyncExitStack | None = None  # holds the conversation's lock
        self._has_slot = False
        self._cancel_reason: CancelReason | None = None
        self._client_calls: list[ClientToolCall] = []  # of Claude's current message
        self._retry_after: int | None = None  # seconds the upstream asked to wait, as the CLI's events tell
        self._used_up: RateLimit | None = None  # the CLI said a window is rejected: the API refused the turn
        self._usage_seen = Usage()  # of the main thread's API messages so far
        self._usage_reported = Usage()  # the part of it already reported to the client
        self._debug = context.settings.debug_enabled
        self._asking: PermissionPrompt | None = None
        self._mode_changed = False  # a decision moved the CLI out of the mode its process was started in

    @property
    def model_answering(self) -> str:
        """The model that answered (or was asked for), for logs, the ledger, metrics and people."""
        return self.model_reported or self.model or "default"

    @property
    def model_label(self) -> str:
        """The `model` the face reports to its client (see `answer_model`)."""
        asked = self.request.model_asked or self.request.model or "claude"
        return answer_model(asked, self.request.model, self.model_reported)

    @property
    def usage(self) -> Usage | None:
        """The whole turn's tokens, once the CLI reported its result (even a failed one)."""
        return self.result.usage if self.result else None

    @property
    def cost_usd(self) -> float:
        return self.result.cost_usd if self.result else 0.0

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    # -- entering: lock, slot, spawn ----------------------------------------------

    async def __aenter__(self) -> Turn:
        ctx = self._ctx
        try:
            await self._lock_conversation()
            self._choose_model(self.resumed)  # (refused here, before a slot, while the model's limit is used up)
            await self._take_slot()
            await self._spawn(self.resumed)
        except BaseException as exc:
            # A turn that never started (no slot, no CLI, cancelled while waiting) is logged and counted too.
            self.outcome = outcome_of(exc)
            self.finished = time.monotonic()
            await self._release()
            self._log()
            ctx.tracker.background(ctx.tracker.ended(self, exc))
            raise
        ctx.tracker.add(self)
        return self

    def _choose_model(self, record: Conversation | None) -> None:
        """The request's model, else the conversation's, else DEFAULT_MODEL; moved to another by a
        LIMIT_FALLBACK rule while a window is used above its share; refused while a window it counts
        against is used up (see `core.limits`)."""
        limits = self._ctx.limits
        self.model_wanted = self.request.model or (record.model if record else "") or self._ctx.settings.default_model
        self.model = self.model_wanted
        if (moved := limits.fallback(self.model_wanted)) is not None:
            self.model, window = moved
            self.fallback_reason = f"{window.name} window at {(window.utilization or 0) * 100:.0f}%"
            log.info(
                "limit_fallback conversation=%s from=%s to=%s window=%s utilization=%s",
                self.key, self.model_wanted, self.model, window.name, window.utilization,
            )  # fmt: skip
        if (used_up := limits.refusal(self.model)) is not None and used_up.resets_at is not None:
            raise LimitReached(used_up.name, used_up.resets_at, session_id=record.session_id if record else None)

    async def _take_slot(self) -> None:
        await self._ctx.slots.acquire(patient=self.request.patient, on_queued=self.request.on_queued)
        self._has_slot = True

    def _free_slot(self) -> None:
        if self._has_slot:
            self._has_slot = False
            self._ctx.slots.release()

    async def _hold(self, key: str) -> None:
        self.key = key
        self._conversation = contextlib.AsyncExitStack()
        # A client that can retry waits for its conversation's previous turn as long as a silent CLI may run
        # (ACTIVITY_TIMEOUT), never forever; a chat's user waits anyway.
        wait = None if self.request.patient else self._ctx.settings.activity_timeout
        await self._conversation.enter_async_context(self._ctx.locks.hold(key, wait=wait))

    async def _let_go(self) -> None:
        if self._conversation is not None:
            stack, self._conversation = self._conversation, None
            await stack.aclose()

    async def _lock_conversation(self) -> None:
        request, store = self.request, self._ctx.store
        key = self.key
        if not key and request.history:
            found = await store.find_holding(request.history)
            if found is not None:
                key = found.key
        await self._hold(key or f"{request.face}:{uuid.uuid4()}")
        record = await store.get(self.key)
        if record is not None and (request.history is None or _holds(record, request.history)):
            self.resumed = record
        elif record is not None and not request.key:
            # The conversation moved on while we waited (a retry or a branch): fork it off.
            await self._let_go()
            await self._hold(f"{request.face}:{uuid.uuid4()}")

    async def _spawn(self, resume: Conversation | None) -> None:
        """Get a process (warm, spare or new) and hand it this turn's user message."""
        launcher, request = self._ctx.launcher, self.request
        message = {
            "type": "user",
            "message": {"role": "user", "content": request.prompt_for(resume)},
            "parent_tool_use_id": None,
            "session_id": "",
        }
        process, self.source = await launcher.process_for(self.key, self.model, resume, self.options)
        self._process = process
        process.touch()
        if not await process.send(message) and self.source != "cold":
            # A warm process that died between turns: replace it with a cold --resume, unseen by the caller.
            await process.stop()
            process = self._process = await launcher.start(self.model, resume, self.options)
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
            self._choose_model(lost)
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
                    if isinstance(event, TextDelta):  # the hot path: most events are these
                        if (delta := self.answer.feed(event)) is not None:
                            self._first_text()
                            yield delta
                        continue
                    self._observe(event, process)
                    if isinstance(event, Result):
                        async for last in self._finish(event):
                            yield last
                        return
                    if isinstance(event, ControlRequest):
                        async for shown in self._control(event, process):
                            yield shown
                    elif (face_event := await self._translate(event, process)) is not None:
                        yield face_event
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
        code = await process.wait_exit(self._ctx.settings.kill_grace)
        self.outcome = "failed"
        raise exit_error(code, process.stderr_tail, session_id=self.session_id)

    async def _translate(self, event: Event, process: CLIProcess) -> TurnEvent | None:
        """What the face sees of one CLI event: the main thread only, tools described, client calls apart."""
        if isinstance(event, ToolStart):
            call = await self._client_call(event, process)
            if call is not None:
                return call
            if event.parent_tool_use_id is not None or event.name == STRUCTURED_OUTPUT_TOOL:
                return None  # a subagent's, or the CLI's own way of handing over a structured answer
            return ToolActivity(event.name, self.last_tool)
        if isinstance(event, ThinkingDelta):
            return Reasoning(event.text) if event.parent_tool_use_id is None and event.text else None
        if isinstance(event, StopReason) and event.reason == "tool_use" and self._client_calls:
            # Claude's message is complete: hand its client calls to the client, and wait. A turn
            # waiting for a client is not running: its slot is free until `continue_with`.
            self.awaiting_client = tuple(self._client_calls)
            self._client_calls.clear()
            self._free_slot()
            process.touch()  # from now on, the client takes its time; that is not the CLI's silence
            return ClientToolsPending(self.awaiting_client, self._unreported(self._usage_seen))
        if (delta := self.answer.feed(event)) is not None:  # whole blocks, when the CLI did not stream
            self._first_text()
        return delta

    async def _control(self, request: ControlRequest, process: CLIProcess) -> AsyncIterator[TurnEvent]:
        """Answer the CLI's control request: a permission prompt goes to a person (see `core.approvals`)."""
        if request.subtype != "can_use_tool":
            log.warning("control_request_unsupported conversation=%s subtype=%s", self.key, request.subtype)
            await process.send(control_error(request.request_id, f"unsupported control request: {request.subtype}"))
            return
        body, approvals = request.body, self._ctx.approvals
        tool = str(body.get("tool_name") or "")
        tool_input: dict[str, Any] = body["input"] if isinstance(body.get("input"), dict) else {}
        suggestions = tuple(s for s in body.get("permission_suggestions") or () if isinstance(s, dict))
        prompt = PermissionPrompt(
            approvals.new_id(), self.key, self.request.face, tool, tool_input, str(body.get("description") or ""),
            suggestions,
        )  # fmt: skip
        self._asking = prompt
        yield ApprovalWaiting(prompt, describe_tool(tool, tool_input))
        try:
            decision = await approvals.ask(prompt)
        finally:
            self._asking = None
        if self._cancel_reason is not None and decision.allow:
            decision = Decision(False, "stop", f"The turn was stopped: {self._cancel_reason.value}")
        process.touch()  # a person took their time; that was not the CLI's silence
        await process.send(permission_answer(request.request_id, prompt, decision))
        self._mode_changed = self._mode_changed or changes_mode(prompt, decision)
        yield ApprovalDone(prompt, decision)

    @property
    def asking(self) -> PermissionPrompt | None:
        """The permission prompt the turn waits on, if any."""
        return self._asking

    def _first_text(self) -> None:
        if self.first_token_after is None:
            self.first_token_after = time.monotonic() - self.started

    async def _client_call(self, event: ToolStart, process: CLIProcess) -> ClientToolCall | None:
        """A main-thread call of one of the client's tools, as the face will return it."""
        session = process.tool_session
        tool = session.by_cli_name(event.name) if session is not None else None
        if session is None or tool is None:
            return None
        if event.parent_tool_use_id is not None:
            await session.refuse(tool, event.input)
            return None
        await session.expect(event.tool_use_id, tool, event.input)
        call = ClientToolCall(event.tool_use_id, tool.name, json.dumps(event.input, ensure_ascii=False))
        self._client_calls.append(call)
        return call

    def _unreported(self, usage: Usage) -> Usage:
        """The part of `usage` (the turn's so far, or its result's) not yet reported to the client, which
        is reported now: each response of a turn split by client tool calls carries its own share."""
        share = usage - self._usage_reported
        self._usage_reported = usage
        return share

    async def continue_with(self, results: dict[str, tuple[str, bool]], *, head_after: HeadAfter | None) -> None:
        """Go on after the client's tool results: wait for a slot again (`Saturated` leaves the turn waiting
        for the results), then hand them to Claude. `head_after` is the transcript the client will send
        back once this answer is part of its history (the request that brought the results knows it)."""
        await self._take_slot()
        self._head_after = head_after
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
        elif isinstance(event, RateLimit):
            if event.status == "rejected" and event.resets_at:
                self._retry_after = max(1, math.ceil(event.resets_at - time.time()))  # when the window opens again
                self._used_up = event
            limits = self._ctx.limits
            changed, crossings = limits.update(event, key=self.key, face=self.request.face)
            if changed:
                self._ctx.tracker.background(self._keep_limits(changed))
            if crossings:
                self._ctx.tracker.background(limits.announce(crossings))
        elif isinstance(event, ApiError):
            process.note(f"API error {event.status}")

    async def _finish(self, result: Result) -> AsyncIterator[TurnEvent]:
        """Judge the CLI's result, account for the turn, and record the session only when it succeeded."""
        self.result = result
        self.session_id = result.session_id or self.session_id
        if session_unknown(result):
            raise SessionNotFound("; ".join(result.errors), session_id=self.session_id)
        if self._cancel_reason is not None:  # the interrupted turn's last word
            self.outcome = "cancelled"
            await self._account(result)
            raise TurnCancelled(self._cancel_reason, session_id=self.session_id)
        stderr = self._process.stderr_tail if self._process else ""
        verdict = result_error(result, session_id=self.session_id, retry_after=self._retry_after, stderr=stderr)
        if verdict is not None:
            self.outcome, error = verdict
            await self._account(result)
            used_up = self._used_up
            if isinstance(error, UpstreamError) and error.status == 429 and used_up and used_up.resets_at:
                self.outcome = "limit_reached"
                raise LimitReached(used_up.kind or "usage", used_up.resets_at, session_id=self.session_id)
            raise error
        if self.request.output_schema and result.structured_output is None:
            self.outcome = "failed"
            await self._account(result)
            missing = "Claude ended the turn without the structured answer the request's schema asks for"
            raise NoStructuredAnswer(missing, session_id=self.session_id)
        self.outcome = result_outcome(result)
        if self.request.output_schema:
            yield self._structured(result)
        elif not self.answer.text and (delta := self.answer.add(result.text)) is not None:
            self._first_text()  # nothing streamed (e.g. a slash command): the result's text is the answer
            yield delta
        head = self._head_after(self.answer.text) if self._head_after else None
        # Claude answered: the answer reaches its reader even when the store cannot record the session (the
        # store logged why; /health tells). Unrecorded, the conversation's next turn carries the history.
        with contextlib.suppress(StoreError):
            await self._ctx.store.record(
                self.key,
                session_id=result.session_id,
                model=self.model_wanted,  # (a fallback is for while the limit lasts, not the conversation's)
                workdir=str(self._process.cwd if self._process else self._ctx.settings.workdir),
                head=head,
                context=self.request.context,
                ledger=self._ledger_entry(result),
            )
        yield Finished(
            self.answer.text,
            self._unreported(result.usage),
            result.cost_usd,
            self.model_label,
            truncated(result),
            fallback=f"{self.model_wanted} → {self.model}: {self.fallback_reason}" if self.fallback_reason else "",
            refused=tuple(describe_tool(n, i) for n, i in result.denials if n not in ASKS_THE_USER),
        )

    def _structured(self, result: Result) -> AnswerDelta:
        """The answer of a turn with an output schema: the object the CLI checked against it, as JSON."""
        self.answer = AnswerBuilder()
        delta = self.answer.add(json.dumps(result.structured_output, ensure_ascii=False))
        assert delta is not None
        self._first_text()
        return delta

    def _ledger_entry(self, result: Result) -> LedgerEntry:
        usage = result.usage
        return LedgerEntry(
            key=self.key, face=self.request.face, model=self.model_answering,
            duration_ms=int(self.elapsed * 1000), prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.output_tokens, cached_tokens=usage.cache_read_tokens,
            cost_usd=result.cost_usd, outcome=self.outcome,
        )  # fmt: skip

    async def _keep_limits(self, changed: list[WindowState]) -> None:
        with contextlib.suppress(StoreError):  # (the store logged it; the engine keeps them all the same)
            await self._ctx.store.keep_limits(changed)

    async def _account(self, result: Result) -> None:
        """The tokens and cost of a turn that did not succeed, in the ledger all the same."""
        try:
            await self._ctx.store.add_turn(self._ledger_entry(result))
        except Exception:
            log.exception("ledger_write_failed conversation=%s", self.key)

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
        if self._asking is not None:  # a person was asked: the question is withdrawn
            self._ctx.approvals.decide(
                self._asking.id, Decision(False, "stop", f"The turn was stopped: {reason.value}")
            )
        process = self._process
        if process is None:
            return
        if process.tool_session is not None:
            process.tool_session.abandon(f"the turn was stopped: {reason.value}")
        if (
            reason is not CancelReason.SHUTDOWN
            and self._ctx.launcher.pool.capacity
            and process.alive
            and await process.interrupt()
        ):
            self._ctx.tracker.background(self._kill_unless_settled(process))
            return
        await process.stop()

    async def _kill_unless_settled(self, process: CLIProcess) -> None:
        await asyncio.sleep(self._ctx.settings.kill_grace)
        if self.result is None and process is self._process:
            log.info("interrupt_ignored conversation=%s; killing the CLI", self.key)
            await process.stop()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tracker = self._ctx.tracker
        self.finished = time.monotonic()
        if exc is not None and self.outcome in ("started", "ok"):
            self.outcome = outcome_of(exc)
        elif self.outcome == "started":
            self.outcome = "cancelled"  # left before its result
        released = tracker.background(self._release(exc))
        tracker.discard(self)
        tracker.background(self._after(released, exc))
        if self.result is None or exc is not None:
            # The caller waits until the process is settled (interrupted and warm again, or gone).
            await asyncio.shield(released)

    async def _after(self, released: asyncio.Task[None], error: BaseException | None) -> None:
        with contextlib.suppress(Exception):
            await released
        self._log()
        await self._ctx.tracker.ended(self, error)

    async def _release(self, error: BaseException | None = None) -> None:
        """Put the process back (warm) or end it; then free the slot and the conversation."""
        try:
            await self._keep_stopped_session(error)
            process = self._process
            if process is not None:
                if await self._settle(process, error):
                    self._keep_warm(process)
                else:
                    await self._end(process)
        finally:
            self._free_slot()
            await self._let_go()

    async def _settle(self, process: CLIProcess, error: BaseException | None) -> bool:
        """Whether the process ended its turn cleanly and may serve the next one."""
        if not self._ctx.launcher.keeps_warm or not process.alive or self._mode_changed:
            return False  # (a process in another mode than it was started in would serve the wrong turns)
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
            async with asyncio.timeout(self._ctx.settings.kill_grace):
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

    async def _keep_stopped_session(self, error: BaseException | None) -> None:
        """A conversation known by its key (a chat's), whose turn was stopped or timed out before Claude
        answered, goes on in the session that turn began: what the user said is in it. (One recognised by
        its history cannot: the history its client resends does not hold the unanswered turn.)"""
        session_id = self.session_id
        if not isinstance(error, (TurnCancelled, ActivityTimeout)) or self._head_after is not None or not session_id:
            return
        if self.resumed is not None and self.resumed.session_id == session_id:
            return  # it goes on there already
        with contextlib.suppress(StoreError):  # (the store logged it: the next turn starts afresh)
            await self._ctx.store.record(
                self.key, session_id=session_id, model=self.model_wanted,
                workdir=str(self._process.cwd if self._process else self._ctx.settings.workdir),
                head=None, context=self.request.context, answered=False,
            )  # fmt: skip
            self._kept_unanswered = True

    def _keep_warm(self, process: CLIProcess) -> None:
        """Keep the process for this conversation's next turn, if that turn would resume its session."""
        session_id = self.session_id or ""
        recorded = (
            self._kept_unanswered
            or self.outcome in ("ok", "error_max_turns")
            or (self.resumed is not None and self.resumed.session_id == session_id)
        )
        if not recorded or not session_id:
            self._ctx.tracker.background(process.stop())
            return
        self._ctx.launcher.keep(self.key, process, session_id, self.model, self.options)

    async def _end(self, process: CLIProcess) -> None:
        if self.result is not None and process.alive:
            process.close_stdin()  # a clean end of input; the CLI exits on its own
            await process.wait_exit(self._ctx.settings.kill_grace)
        await process.stop()  # and sweeps up whatever it left running

    def _log(self) -> None:
        result = self.result
        usage = result.usage if result else None
        log.info(
            "turn face=%s dialect=%s conversation=%s session=%s model=%s resumed=%s process=%s outcome=%s "
            "duration_ms=%d prompt_tokens=%s completion_tokens=%s cost_usd=%s%s",
            self.request.face,
            self.request.dialect or self.request.face,
            self.key,
            self.session_id,
            self.model_answering,
            self.resumed is not None,
            self.source,
            self.outcome,
            self.elapsed * 1000,
            usage.prompt_tokens if usage else 0,
            usage.output_tokens if usage else 0,
            f"{result.cost_usd:.6f}" if result else "0",
            f" fallback_from={self.model_wanted}" if self.fallback_reason else "",
        )
