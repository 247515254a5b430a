"""One HTTP turn, whatever the dialect: the request (as chat completion messages) planned into a
Claude Code turn, the turn run or a parked one continued, and its events handed to a writer.

Each dialect reads its own request, translates it into a `ChatCompletionRequest` (the one
conversation model: matching, parking and continuity work on it), and brings a writer that
speaks its wire format. Everything between is here, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiohttp import web

from core import (
    AnswerDelta,
    ApprovalDone,
    ApprovalWaiting,
    ClientToolCall,
    ClientToolsPending,
    EngineError,
    Finished,
    Reasoning,
    ToolActivity,
    Transcript,
    Turn,
    TurnEvent,
    TurnRequest,
    UnknownModel,
    resolve_model,
)
from proxy.conversation import BadConversation, conversation_key, plan_turn
from proxy.errors import ApiException, bad_request, model_not_found
from proxy.formats import effort, output_schema
from proxy.keys import PARKED, SCOPE, SETTINGS, get_engine
from proxy.parked import ParkedTurn
from proxy.schema import ChatCompletionRequest
from proxy.writers import Writer

log = logging.getLogger("proxy.chat")


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    """Fields whose meaning Claude Code cannot give: refused by name, never silently ignored."""
    if body.n is not None and body.n > 1:
        raise bad_request("n > 1 is not supported: a Claude Code turn has one answer", param="n")
    if body.logprobs:
        raise bad_request("logprobs are not supported: Claude does not report them", param="logprobs")
    if body.top_logprobs:
        raise bad_request("top_logprobs are not supported: Claude does not report them", param="top_logprobs")


@dataclass(frozen=True)
class Dialect:
    """An HTTP API the face speaks, and what it calls the fields every dialect has, for errors that point at
    them. `messages` leaves out positions in a dialect other than chat completions (they are those of the
    translated messages)."""

    name: str
    messages: str | None = None
    answer_format: str = "response_format"
    effort: str = "reasoning_effort"


CHAT = Dialect("chat")
RESPONSES = Dialect("responses", messages="input", answer_format="text.format", effort="reasoning.effort")
MESSAGES = Dialect("messages", messages="messages", answer_format="output_format")


async def serve(
    request: web.Request, body: ChatCompletionRequest, writer: Writer, dialect: Dialect = CHAT
) -> web.StreamResponse:
    """Answer `body` through `writer`: a new turn, or the parked turn whose tool results it brings."""

    def refused(exc: BadConversation) -> ApiException:
        param, messages_param = exc.param, dialect.messages
        if messages_param is not None and param is not None and param.startswith("messages"):
            param = messages_param
        return bad_request(str(exc), param=param)

    settings = request.app[SETTINGS]
    _refuse_unsupported(body)
    answer_format = body.response_format
    schema = output_schema(
        answer_format.type if answer_format else None,
        answer_format.json_schema.schema_ if answer_format and answer_format.json_schema else None,
        dialect.answer_format,
    )
    reasoning = effort(body.reasoning_effort, dialect.effort)
    try:
        model = resolve_model(body.model, default=settings.default_model, aliases=settings.model_aliases)
    except UnknownModel as exc:
        raise model_not_found(exc) from None
    scope = request[SCOPE]
    try:
        key = conversation_key(body, request.headers.get("X-Conversation-Id"), scope)
        plan = plan_turn(body, scope)
    except BadConversation as exc:
        raise refused(exc) from None

    # The client will send back what it received, progress lines included: that is the transcript to record.
    def head_after(_answer: str) -> Transcript:
        return plan.head_after(writer.sent_text, writer.tool_calls)

    parked_turns = request.app[PARKED]
    parked = parked_turns.take(plan.history) if plan.tool_results else None
    if parked is not None:
        # The results of the calls a parked turn is waiting for: the same Claude turn goes on.
        try:
            await parked.turn.continue_with(plan.results_for(parked.calls), head_after=head_after)
        except BadConversation as exc:
            parked_turns.park(parked)
            raise refused(exc) from None
        except EngineError:
            parked_turns.park(parked)  # no slot for it now: it waits on for a retry of this request
            raise
        writer.turn = parked.turn
        return await _run(writer, request, parked.turn, parked.stack, parked.events, head_after)
    await parked_turns.release_moved_on(plan.sent, plan.said, key)
    turn_request = TurnRequest(
        prompt_for=plan.prompt_for,
        key=key,
        history=plan.history,
        model=model,
        model_asked=body.model or "",
        head_after=head_after,
        context=plan.context,
        face="http",
        dialect=dialect.name,
        tools=plan.tools,
        permission_mode=settings.proxy_permission_mode,
        output_schema=schema,
        effort=reasoning,
    )
    stack = AsyncExitStack()
    turn = await stack.enter_async_context(get_engine(request).turn(turn_request))  # fails before anything is sent
    writer.turn = turn
    return await _run(writer, request, turn, stack, aiter(turn), head_after)


async def _run(
    writer: Writer,
    request: web.Request,
    turn: Turn,
    stack: AsyncExitStack,
    events: AsyncIterator[TurnEvent],
    head_after: Callable[[str], Transcript],
) -> web.StreamResponse:
    """Read the turn into the writer. `stack` holds the turn: leaving it leaves the turn (its slot and
    conversation freed, with the error that ended it, if any), unless the turn is parked to wait for the
    client's tool results, which takes the stack along. `head_after(sent)` is the history the client
    will send back once it has what was sent."""
    settings = request.app[SETTINGS]
    keeper = None
    if writer.streaming:
        keeper = asyncio.create_task(writer.keep_alive(turn, settings.proxy_progress_every))
    failed_in_stream = False
    try:
        async with stack:
            try:
                async for event in events:
                    if isinstance(event, AnswerDelta):
                        await writer.content(event.text)
                    elif isinstance(event, ClientToolCall):
                        await writer.tool_call(event)
                    elif isinstance(event, ClientToolsPending):
                        await writer.finish("tool_calls", event.usage)
                        # Parked with the history the client will send back: everything so far, and these calls.
                        head = head_after(writer.sent_text)
                        request.app[PARKED].park(ParkedTurn(turn, events, event.calls, head, stack.pop_all()))
                        break
                    elif isinstance(event, ToolActivity):
                        await writer.progress(event.description)
                    elif isinstance(event, ApprovalWaiting):
                        await writer.progress(f"🔐 waiting for approval in Telegram: {event.description}")
                    elif isinstance(event, ApprovalDone):
                        await writer.progress("✅ approved" if event.decision.allow else "❌ not approved")
                    elif isinstance(event, Reasoning):
                        await writer.thinking(event.text)
                    elif isinstance(event, Finished):
                        await writer.finish("length" if event.truncated else "stop", event.usage)
            except Exception as exc:
                if writer.started and writer.streaming:
                    failed_in_stream = True  # the stream ends with an error event; the turn leaves with the error
                    if not isinstance(exc, EngineError):
                        log.exception("stream_crashed conversation=%s", turn.key)  # a bug, or the store failed
                    await writer.fail(exc)
                raise  # else nothing was sent yet: the error middleware answers with a proper status
    except Exception:
        if not failed_in_stream:
            raise
    finally:
        if keeper is not None:
            keeper.cancel()
    return writer.response()
