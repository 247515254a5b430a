"""POST /v1/chat/completions: one Claude Code turn, streamed as SSE or answered whole."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from core.answer import AnswerDelta
from core.describe import describe_tool, format_duration
from core.engine import Turn, TurnRequest
from core.errors import EngineError
from core.events import Result, ThinkingDelta, ToolStart, Usage
from core.models import UnknownModel, resolve_model
from proxy.conversation import BadConversation, conversation_key, plan_turn
from proxy.errors import ApiException, ApiFailure, bad_request, engine_failure
from proxy.keys import SCOPE, SETTINGS, get_engine
from proxy.schema import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    CompletionUsage,
    Delta,
    FinishReason,
    PromptTokensDetails,
    ResponseMessage,
    completion_id,
)

log = logging.getLogger("proxy.chat")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}


async def _read_request(request: web.Request) -> ChatCompletionRequest:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation_failure(exc) from None


_BRANCH_NAMES = {"system", "developer", "user", "assistant", "tool", "function", "text", "image_url", "refusal", "str"}


def _param(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as an OpenAI `param`, without the names of union branches."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _BRANCH_NAMES))]
    return ".".join(parts)


def _validation_failure(exc: ValidationError) -> ApiException:
    errors = exc.errors()
    # In a union, every branch reports; the tag mismatch, or else the deepest error, is the one that explains.
    tagged = [e for e in errors if e["type"] == "union_tag_invalid"]
    first = tagged[0] if tagged else max(errors, key=lambda e: len(e["loc"]))
    param = _param(first["loc"])
    message = first["msg"]
    if first["type"] == "union_tag_invalid":
        context = first.get("ctx", {})
        what = "role" if "role" in str(context.get("discriminator")) else "content part type"
        message = f"unknown {what} {context.get('tag')}; expected one of {context.get('expected_tags')}"
    elif first["type"] == "too_short" and param == "messages":
        message = "messages must contain at least one message"
    elif first["type"] == "missing":
        message = f"{param} is required"
    return bad_request(f"invalid request: {message} (at {param or 'body'})", param=param or None)


def finish_reason(result: Result) -> FinishReason:
    if (
        result.stop_reason == "max_tokens"
        or result.subtype == "error_max_turns"
        or result.api_error_kind == "max_output_tokens"
    ):
        return "length"
    return "stop"


def completion_usage(usage: Usage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.prompt_tokens + usage.output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cache_read_tokens),
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    body = await _read_request(request)
    try:
        model = resolve_model(body.model, default=settings.default_model, aliases=settings.model_aliases)
    except UnknownModel as exc:
        raise ApiException(
            ApiFailure(404, "invalid_request_error", str(exc), code="model_not_found", param="model")
        ) from None
    scope = request[SCOPE]
    try:
        key = conversation_key(body, request.headers.get("X-Conversation-Id"), scope)
        plan = plan_turn(body, scope)
    except BadConversation as exc:
        raise bad_request(str(exc), param=exc.param) from None
    turn_request = TurnRequest(
        prompt_for=plan.prompt_for,
        key=key,
        history=plan.history,
        model=model,
        head_after=plan.head_after,
        context=plan.context,
        face="http",
    )
    requested = body.model or model or "claude"
    engine = get_engine(request)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        sse = _SSE(request, requested, settings.proxy_progress)
        # The client will send back what it received, progress lines included: fingerprint that.
        turn_request = dataclasses.replace(turn_request, head_after=lambda _answer: plan.head_after(sse.sent_text))
        return await _stream(sse, engine.turn(turn_request), include_usage, settings.proxy_progress_every)
    async with engine.turn(turn_request) as turn:
        async for _ in turn:
            pass
    assert turn.result is not None
    return web.json_response(
        ChatCompletion(
            model=turn.model_reported or requested,
            choices=[
                Choice(message=ResponseMessage(content=turn.answer.text), finish_reason=finish_reason(turn.result))
            ],
            usage=completion_usage(turn.result.usage),
        ).model_dump(mode="json")
    )


class _SSE:
    """One SSE answer. Started lazily, so failures before any output get a proper HTTP status."""

    def __init__(self, request: web.Request, requested_model: str, progress: str) -> None:
        self._request = request
        self._requested = requested_model
        self.progress_mode = progress
        self.turn: Turn | None = None
        self.id = completion_id()
        self.created = int(time.time())
        self.response: web.StreamResponse | None = None
        self.last_write = time.monotonic()
        self.finished = False
        self._sent: list[str] = []
        self._write_lock = asyncio.Lock()
        self._content_frame: tuple[str, bytes, bytes] | None = None  # (model, before, after) of a content chunk

    @property
    def model(self) -> str:
        return (self.turn.model_reported if self.turn else "") or self._requested

    @property
    def sent_text(self) -> str:
        return "".join(self._sent)

    async def _write(self, data: bytes) -> None:
        assert self.response is not None
        async with self._write_lock:  # the progress task writes too
            await self.response.write(data)
        self.last_write = time.monotonic()

    async def start(self) -> None:
        if self.response is not None:
            return
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(self._request)
        self.response = response
        await self.chunk(Delta(role="assistant", content=""))

    async def content(self, text: str) -> None:
        """A content delta. The hot path: the chunk is rendered once by the schema, then reused as a frame."""
        model = self.model
        if self._content_frame is None or self._content_frame[0] != model:
            marker = "\u0000marker\u0000"
            rendered = self._payload(Delta(content=marker)).model_dump_json()
            before, _, after = rendered.partition(json.dumps(marker)[1:-1])
            self._content_frame = (model, b"data: " + before.encode(), after.encode() + b"\n\n")
        _, before, after = self._content_frame
        self._sent.append(text)
        await self._write(before + json.dumps(text, ensure_ascii=False)[1:-1].encode() + after)

    async def progress(self, line: str) -> None:
        """What Claude is doing, so clients' idle watchdogs see activity during long tool runs."""
        if self.progress_mode == "off" or self.finished:
            return
        await self.start()
        if self.progress_mode == "reasoning":
            await self.chunk(Delta(reasoning_content=line + "\n"))
        else:
            await self.content(f"\n> {line}\n\n")

    def _payload(self, delta: Delta, finish: FinishReason | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[ChunkChoice(delta=delta, finish_reason=finish)]
        )

    async def chunk(self, delta: Delta, finish: FinishReason | None = None) -> None:
        await self.send(self._payload(delta, finish).model_dump(mode="json"))

    async def send(self, data: dict[str, Any]) -> None:
        await self._write(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    async def done(self) -> None:
        assert self.response is not None
        self.finished = True
        await self._write(b"data: [DONE]\n\n")
        await self.response.write_eof()


async def _keep_alive(sse: _SSE, turn: Turn, every: float) -> None:
    """During silences (a long tool run, a long think), say that the turn is still at work."""
    last_tool = ""
    while not sse.finished:
        await asyncio.sleep(min(every / 3, 1.0))
        if turn.result is not None or sse.finished:
            return
        if time.monotonic() - sse.last_write >= every:
            last_tool = turn.last_tool or last_tool
            doing = f"; last: {last_tool}" if last_tool else ""
            await sse.progress(f"… still working ({format_duration(turn.elapsed)}{doing})")


async def _stream(sse: _SSE, turn: Turn, include_usage: bool, progress_every: float) -> web.StreamResponse:
    sse.turn = turn
    async with turn:
        keeper = asyncio.create_task(_keep_alive(sse, turn, progress_every)) if sse.progress_mode != "off" else None
        try:
            async for event in turn:
                if isinstance(event, AnswerDelta):
                    await sse.start()
                    await sse.content(event.text)
                elif isinstance(event, ToolStart):
                    await sse.start()
                    if event.parent_tool_use_id is None:
                        await sse.progress(describe_tool(event.name, event.input))
                elif isinstance(event, ThinkingDelta):
                    await sse.start()
                    if sse.progress_mode == "reasoning" and event.parent_tool_use_id is None:
                        await sse.chunk(Delta(reasoning_content=event.text))
                elif isinstance(event, Result):
                    sse.finished = True
                    await sse.start()
                    await sse.chunk(Delta(), finish=finish_reason(event))
                    if include_usage:
                        usage = ChatCompletionChunk(
                            id=sse.id, created=sse.created, model=sse.model, choices=[],
                            usage=completion_usage(event.usage),
                        )  # fmt: skip
                        await sse.send(usage.model_dump(mode="json"))
                    await sse.done()
        except EngineError as exc:
            if sse.response is None:
                raise  # nothing sent yet: the error middleware answers with a proper status
            sse.finished = True
            failure = engine_failure(exc)
            log.info("stream_failed status=%s code=%s", failure.status, failure.code)
            await sse.send(failure.body().model_dump(mode="json"))
            await sse.done()
        finally:
            if keeper is not None:
                keeper.cancel()
    assert sse.response is not None
    return sse.response
