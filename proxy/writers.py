"""How one turn's events reach the client: as an SSE stream, or as one JSON answer.

Both writers take the same calls (content, tool calls, progress, finish), so the request
handler reads the turn once, whichever the client asked for. Both remember the content
they sent: the client will send it back, and the conversation is recognised by it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from core import ClientToolCall, Turn, Usage, format_duration
from proxy.errors import ApiFailure, failure_of
from proxy.schema import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    CompletionUsage,
    Delta,
    FinishReason,
    PromptTokensDetails,
    ResponseFunctionCall,
    ResponseMessage,
    ResponseToolCall,
    ToolCallDelta,
    completion_id,
)

log = logging.getLogger("proxy.writers")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}


def completion_usage(usage: Usage | None) -> CompletionUsage:
    usage = usage or Usage()
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.prompt_tokens + usage.output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cache_read_tokens),
    )


class Writer:
    """What every writer of a turn's answer takes (each dialect has a whole one and a streamed one), and what
    they share: the model to report, and the content and calls sent so far."""

    started = False
    streaming = False  # an SSE answer: it starts with the first output and fails in-stream after that

    def __init__(self) -> None:
        self.turn: Turn | None = None
        self.id = completion_id()
        self.created = int(time.time())
        self.finished = False
        self._sent: list[str] = []
        self.tool_calls: list[ClientToolCall] = []

    @property
    def model(self) -> str:
        return self.turn.model_label if self.turn else "claude"

    @property
    def sent_text(self) -> str:
        return "".join(self._sent)

    def _fresh(self, text: str) -> str:
        """A turn continued after tool results must not begin its answer with the blank line between blocks."""
        return text if self._sent else text.lstrip("\n")

    async def content(self, text: str) -> None:
        raise NotImplementedError

    async def tool_call(self, call: ClientToolCall) -> None:
        raise NotImplementedError

    async def progress(self, line: str) -> None:
        """What Claude is doing (a tool, an approval): for the client's eyes and its idle watchdog."""

    async def thinking(self, text: str) -> None:
        """Claude's thinking, for a client that shows it."""

    async def finish(self, reason: FinishReason, usage: Usage | None) -> None:
        raise NotImplementedError

    async def fail(self, error: BaseException) -> None:
        """After the first byte of a stream, a failure is told in the stream."""
        raise NotImplementedError

    async def keep_alive(self, turn: Turn, every: float) -> None:
        """Runs beside a streamed turn: says the turn is still at work during its silences."""

    def response(self) -> web.StreamResponse:
        raise NotImplementedError


class WholeWriter(Writer):
    """Collects the answer for one JSON response (each dialect shapes it); failures become HTTP statuses."""

    def __init__(self) -> None:
        super().__init__()
        self._finish: FinishReason = "stop"
        self._usage: Usage | None = None

    async def content(self, text: str) -> None:
        if text := self._fresh(text):
            self._sent.append(text)

    async def tool_call(self, call: ClientToolCall) -> None:
        self.tool_calls.append(call)

    async def finish(self, reason: FinishReason, usage: Usage | None) -> None:
        self.finished = True
        self._finish, self._usage = reason, usage


class JSONWriter(WholeWriter):
    """The whole chat completion."""

    def response(self) -> web.StreamResponse:
        calls = [
            ResponseToolCall(id=c.call_id, function=ResponseFunctionCall(name=c.name, arguments=c.arguments))
            for c in self.tool_calls
        ]
        text = self.sent_text
        message = ResponseMessage(content=text if text or not calls else None, tool_calls=calls or None)
        completion = ChatCompletion(
            id=self.id, created=self.created, model=self.model,
            choices=[Choice(message=message, finish_reason=self._finish)], usage=completion_usage(self._usage),
        )  # fmt: skip
        return web.json_response(completion.model_dump(mode="json"))


class StreamWriter(Writer):
    """What the SSE writers of every dialect share: a response prepared with the first output (so failures
    before it get a proper HTTP status), serialised writes, and notes during the turn's silences."""

    streaming = True

    def __init__(self, request: web.Request, progress: str) -> None:
        super().__init__()
        self._request = request
        self.progress_mode = progress
        self._response: web.StreamResponse | None = None
        self.last_write = time.monotonic()
        self._write_lock = asyncio.Lock()

    @property
    def started(self) -> bool:  # type: ignore[override]
        return self._response is not None

    async def _write(self, data: bytes) -> None:
        assert self._response is not None
        async with self._write_lock:  # the keep-alive task writes too
            await self._response.write(data)
        self.last_write = time.monotonic()

    async def _prepare(self) -> bool:
        """Send the headers, once; True the first time."""
        if self._response is not None:
            return False
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(self._request)
        self._response = response
        return True

    def response(self) -> web.StreamResponse:
        assert self._response is not None
        return self._response

    async def fail(self, error: BaseException) -> None:
        """After the first byte, a failure is told in the stream (in the dialect's shape), and the stream ends."""
        self.finished = True
        failure = failure_of(error)
        log.info("stream_failed status=%s code=%s", failure.status, failure.code)
        await self._failed(failure)
        await self.response().write_eof()

    async def _failed(self, failure: ApiFailure) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def progress(self, line: str) -> None:
        """What Claude is doing, so clients' idle watchdogs see activity during long tool runs: as PROXY_PROGRESS
        says, a line of the answer (`text`), the dialect's reasoning (`reasoning`), or nothing but a sign of life
        (the stream starts even then: its headers are one)."""
        if self.finished:
            return
        await self.start()
        if self.progress_mode == "text":
            await self.content(f"\n> {line}\n\n")
        elif self.progress_mode == "reasoning":
            await self._reasoning(line + "\n")
        else:
            await self._alive()

    async def _reasoning(self, text: str) -> None:
        """Progress as the dialect shows reasoning."""
        raise NotImplementedError

    async def _alive(self) -> None:
        """A sign of life that shows nothing (where the dialect has one)."""

    @property
    def notes_silence(self) -> bool:
        """Whether the keep-alive has anything to say (OpenAI's stream: only when progress is shown)."""
        return self.progress_mode != "off"

    async def keep_alive(self, turn: Turn, every: float) -> None:
        """During silences (a long tool run, a long think), say that the turn is still at work."""
        if not self.notes_silence:
            return
        last_tool = ""
        while not self.finished:
            await asyncio.sleep(min(every / 3, 1.0))
            if self.finished or turn.awaiting_client:
                continue
            if time.monotonic() - self.last_write >= every:
                if turn.asking is not None:
                    await self.progress(f"… waiting for approval in Telegram ({turn.asking.tool})")
                    continue
                last_tool = turn.last_tool or last_tool
                doing = f"; last: {last_tool}" if last_tool else ""
                await self.progress(f"… still working ({format_duration(turn.elapsed)}{doing})")


class SSEWriter(StreamWriter):
    """One chat completion as SSE chunks."""

    def __init__(self, request: web.Request, progress: str, include_usage: bool) -> None:
        super().__init__(request, progress)
        self._include_usage = include_usage
        self._content_frame: tuple[str, bytes, bytes] | None = None  # (model, before, after) of a content chunk

    async def start(self) -> None:
        if await self._prepare():
            await self.chunk(Delta(role="assistant", content=""))

    async def content(self, text: str) -> None:
        """A content delta. The hot path: the chunk is rendered once by the schema, then reused as a frame."""
        text = self._fresh(text)
        if not text:
            return
        await self.start()
        model = self.model
        if self._content_frame is None or self._content_frame[0] != model:
            marker = "\u0000marker\u0000"
            rendered = self._payload(Delta(content=marker)).model_dump_json()
            head, _, tail = rendered.partition(json.dumps(marker)[1:-1])
            self._content_frame = (model, b"data: " + head.encode(), tail.encode() + b"\n\n")
        _, before, after = self._content_frame
        self._sent.append(text)
        await self._write(before + json.dumps(text, ensure_ascii=False)[1:-1].encode() + after)

    async def tool_call(self, call: ClientToolCall) -> None:
        await self.start()
        index = len(self.tool_calls)
        self.tool_calls.append(call)
        function = ResponseFunctionCall(name=call.name, arguments=call.arguments)
        await self.chunk(Delta(tool_calls=[ToolCallDelta(index=index, id=call.call_id, function=function)]))

    async def _reasoning(self, text: str) -> None:
        await self.chunk(Delta(reasoning_content=text))  # DeepSeek's field, which OpenClaw and others read

    async def thinking(self, text: str) -> None:
        await self.start()
        if self.progress_mode == "reasoning":
            await self._reasoning(text)

    def _payload(self, delta: Delta, finish: FinishReason | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[ChunkChoice(delta=delta, finish_reason=finish)]
        )

    async def chunk(self, delta: Delta, finish: FinishReason | None = None) -> None:
        await self.send(self._payload(delta, finish).model_dump(mode="json"))

    async def send(self, data: dict[str, Any]) -> None:
        await self._write(b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")

    async def finish(self, reason: FinishReason, usage: Usage | None) -> None:
        self.finished = True
        await self.start()
        await self.chunk(Delta(), finish=reason)
        if self._include_usage:
            last = ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=[], usage=completion_usage(usage)
            )
            await self.send(last.model_dump(mode="json"))
        await self._done()

    async def _failed(self, failure: ApiFailure) -> None:
        """An OpenAI-shaped error event, then [DONE]."""
        await self.send(failure.body().model_dump(mode="json"))
        await self._write(b"data: [DONE]\n\n")

    async def _done(self) -> None:
        assert self._response is not None
        await self._write(b"data: [DONE]\n\n")
        await self._response.write_eof()
