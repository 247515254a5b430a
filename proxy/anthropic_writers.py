"""A turn's answer in Anthropic's Messages shape: one message object, or its SSE event sequence
(message_start, content_block_start / delta / stop per block, message_delta with the stop
reason and usage, message_stop; `ping` during silences; an `error` event after a failure).

The answer's text is one text block (as chat completions send one content string); Claude's
thinking is a thinking block when the client asked for thinking; the client's tool calls are
`tool_use` blocks and the stop reason `tool_use`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from core import ClientToolCall, Usage
from proxy.errors import ApiFailure
from proxy.schema import FinishReason
from proxy.writers import StreamWriter, WholeWriter

STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal",
}  # fmt: skip


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def anthropic_usage(usage: Usage | None) -> dict[str, int]:
    usage = usage or Usage()
    return {
        "input_tokens": usage.input_tokens,  # Anthropic counts the cache apart
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }


def tool_use_block(call: ClientToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = {"arguments": call.arguments}  # (never from our MCP side, which gets JSON objects)
    return {"type": "tool_use", "id": call.call_id, "name": call.name, "input": arguments}


class MessageWriter(WholeWriter):
    """Collects the answer; `response()` is the whole message. Failures become HTTP statuses."""

    def __init__(self, shows_thinking: bool) -> None:
        super().__init__()
        self.id = message_id()
        self._shows_thinking = shows_thinking
        self._thinking: list[str] = []

    async def thinking(self, text: str) -> None:
        if self._shows_thinking:
            self._thinking.append(text)

    def response(self) -> web.StreamResponse:
        content: list[dict[str, Any]] = []
        if self._thinking:
            content.append({"type": "thinking", "thinking": "".join(self._thinking), "signature": ""})
        if self.sent_text or not self.tool_calls:
            content.append({"type": "text", "text": self.sent_text})
        content += [tool_use_block(call) for call in self.tool_calls]
        return web.json_response({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
            "stop_reason": STOP_REASONS[self._finish], "stop_sequence": None, "usage": anthropic_usage(self._usage),
        })  # fmt: skip


class MessageStreamWriter(StreamWriter):
    """One message as Anthropic's SSE events. Blocks open as their kind of output arrives and close when
    another kind comes; progress is text (PROXY_PROGRESS=text), thinking (=reasoning, when the client
    asked for thinking), or else a `ping`, so the client's idle watchdog sees life either way."""

    def __init__(self, request: web.Request, progress: str, shows_thinking: bool) -> None:
        super().__init__(request, progress)
        self.id = message_id()
        self._shows_thinking = shows_thinking
        self._open: str | None = None  # the kind of the block being written
        self._blocks = 0
        self._text_frame: tuple[int, bytes] | None = None  # (block index, the text delta's frame up to the text)

    @property
    def notes_silence(self) -> bool:
        return True  # a ping at least

    async def _event(self, kind: str, data: dict[str, Any]) -> None:
        payload = json.dumps({"type": kind, **data}, ensure_ascii=False, separators=(",", ":"))
        await self._write(f"event: {kind}\ndata: {payload}\n\n".encode())

    async def start(self) -> None:
        if await self._prepare():
            message: dict[str, Any] = {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": anthropic_usage(None),
            }  # fmt: skip
            await self._event("message_start", {"message": message})
            await self._event("ping", {})

    async def _block(self, kind: str, start: dict[str, Any]) -> None:
        """Make sure a block of `kind` is open (closing another kind first)."""
        await self.start()
        if self._open == kind:
            return
        await self._close()
        await self._event("content_block_start", {"index": self._blocks, "content_block": start})
        self._open = kind

    async def _close(self) -> None:
        if self._open is not None:
            await self._event("content_block_stop", {"index": self._blocks})
            self._blocks += 1
            self._open = None

    async def _delta(self, delta: dict[str, Any]) -> None:
        await self._event("content_block_delta", {"index": self._blocks, "delta": delta})

    async def content(self, text: str) -> None:
        text = self._fresh(text)
        if not text:
            return
        await self._block("text", {"type": "text", "text": ""})
        self._sent.append(text)
        # The hot path: the event's frame is rendered once per block; a delta fills in its text.
        if self._text_frame is None or self._text_frame[0] != self._blocks:
            head = (f'event: content_block_delta\ndata: {{"type":"content_block_delta","index":{self._blocks},'
                    '"delta":{"type":"text_delta","text":"')  # fmt: skip
            self._text_frame = (self._blocks, head.encode())
        escaped = json.dumps(text, ensure_ascii=False)[1:-1].encode()
        await self._write(self._text_frame[1] + escaped + b'"}}\n\n')

    async def thinking(self, text: str) -> None:
        if not self._shows_thinking or not text:
            return
        await self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        await self._delta({"type": "thinking_delta", "thinking": text})

    async def _reasoning(self, text: str) -> None:
        await (self.thinking(text) if self._shows_thinking else self._alive())

    async def _alive(self) -> None:
        await self._event("ping", {})

    async def tool_call(self, call: ClientToolCall) -> None:
        self.tool_calls.append(call)
        await self._block("tool_use", {**tool_use_block(call), "input": {}})
        await self._delta({"type": "input_json_delta", "partial_json": call.arguments or "{}"})
        await self._close()

    async def finish(self, reason: FinishReason, usage: Usage | None) -> None:
        self.finished = True
        await self.start()
        await self._close()
        await self._event("message_delta", {"delta": {"stop_reason": STOP_REASONS[reason], "stop_sequence": None},
                                            "usage": anthropic_usage(usage)})  # fmt: skip
        await self._event("message_stop", {})
        await self.response().write_eof()

    async def _failed(self, failure: ApiFailure) -> None:
        """An `error` event in Anthropic's shape."""
        await self._close()
        await self._event("error", {"error": failure.anthropic_body()["error"]})
