"""A turn's answer in the Responses API's shape: one response object, or its SSE event sequence
(response.created, response.in_progress, then per output item output_item.added, its parts and
deltas, output_item.done; response.completed / response.incomplete with usage; response.failed
after a failure), every event with its `sequence_number`.

Output items: the answer as `message` items (`output_text`), Claude's thinking and the turn's
progress as `reasoning` items with a summary (so clients such as Codex show progress and their
idle watchdog is fed), the client's tool calls as `function_call` or `custom_tool_call` items.
Before the final event, `keep` is given the response (to store it for `previous_response_id`).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from core import ClientToolCall, StoreError, Usage
from proxy.errors import ApiFailure
from proxy.responses_schema import CUSTOM_INPUT
from proxy.schema import FinishReason
from proxy.writers import StreamWriter, WholeWriter

Keep = Callable[[str, list[dict[str, Any]]], Awaitable[None]]  # (response id, output items)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def responses_usage(usage: Usage | None) -> dict[str, Any]:
    usage = usage or Usage()
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
    }


class ResponseShape:
    """What both writers share: the response object around the output items, and the call items."""

    def __init__(self, echo: dict[str, Any], custom_tools: frozenset[str], keep: Keep | None) -> None:
        self.response_id = _id("resp")
        self.created_at = int(time.time())
        self.echo = echo  # the request's fields a response object repeats (instructions, tools, metadata, ...)
        self.custom_tools = custom_tools
        self.keep = keep
        self.output: list[dict[str, Any]] = []

    def response(self, model: str, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.response_id, "object": "response", "created_at": self.created_at, "status": status,
            "model": model, "output": self.output if status != "in_progress" else [], "error": None,
            "incomplete_details": None, "usage": None, **self.echo, **extra,
        }  # fmt: skip

    def call_item(self, call: ClientToolCall) -> dict[str, Any]:
        if call.name in self.custom_tools:
            try:
                given = json.loads(call.arguments or "{}").get(CUSTOM_INPUT, "")
            except (ValueError, AttributeError):
                given = call.arguments
            return {"type": "custom_tool_call", "id": _id("ctc"), "call_id": call.call_id, "name": call.name,
                    "input": str(given), "status": "completed"}  # fmt: skip
        return {"type": "function_call", "id": _id("fc"), "call_id": call.call_id, "name": call.name,
                "arguments": call.arguments or "{}", "status": "completed"}  # fmt: skip

    def ending(self, model: str, reason: FinishReason, usage: Usage | None) -> tuple[str, dict[str, Any]]:
        """The final event's type and response."""
        if reason == "length":
            details = {"reason": "max_output_tokens"}
            return "response.incomplete", self.response(model, "incomplete", incomplete_details=details,
                                                        usage=responses_usage(usage))  # fmt: skip
        return "response.completed", self.response(model, "completed", usage=responses_usage(usage))

    async def kept(self) -> None:
        if self.keep is None:
            return
        # A store that cannot be written: the answer still goes out, only previous_response_id will not find it.
        with contextlib.suppress(StoreError):
            await self.keep(self.response_id, self.output)


def _message_item(text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": _id("msg"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}  # fmt: skip


class ResponseWriter(WholeWriter):
    """Collects the answer; `response()` is the whole response object."""

    def __init__(self, shape: ResponseShape) -> None:
        super().__init__()
        self.shape = shape
        self._reasoning: list[str] = []

    async def thinking(self, text: str) -> None:
        self._reasoning.append(text)

    async def finish(self, reason: FinishReason, usage: Usage | None) -> None:
        await super().finish(reason, usage)
        output = self.shape.output
        if self._reasoning:
            summary = [{"type": "summary_text", "text": "".join(self._reasoning)}]
            output.append({"type": "reasoning", "id": _id("rs"), "summary": summary})
        if self.sent_text or not self.tool_calls:
            output.append(_message_item(self.sent_text))
        output += [self.shape.call_item(call) for call in self.tool_calls]
        await self.shape.kept()

    def response(self) -> web.StreamResponse:
        _, body = self.shape.ending(self.model, self._finish, self._usage)
        return web.json_response(body)


class ResponseStreamWriter(StreamWriter):
    """One response as the Responses API's SSE events; items open as their kind of output arrives."""

    def __init__(self, request: web.Request, progress: str, shape: ResponseShape) -> None:
        super().__init__(request, progress)
        self.shape = shape
        self._sequence = 0
        self._item: dict[str, Any] | None = None  # the message or reasoning item being written
        self._item_text: list[str] = []
        self._text_frame: tuple[str, bytes, bytes] | None = None  # (item id, before the number, before the text)

    async def _event(self, kind: str, **data: Any) -> None:
        payload = json.dumps({"type": kind, "sequence_number": self._sequence, **data}, ensure_ascii=False,
                             separators=(",", ":"))  # fmt: skip
        self._sequence += 1
        await self._write(f"event: {kind}\ndata: {payload}\n\n".encode())

    async def start(self) -> None:
        if await self._prepare():
            await self._event("response.created", response=self.shape.response(self.model, "in_progress"))
            await self._event("response.in_progress", response=self.shape.response(self.model, "in_progress"))

    @property
    def _index(self) -> int:
        return len(self.shape.output)

    async def _open(self, kind: str) -> dict[str, Any]:
        await self.start()
        if self._item is not None and self._item["type"] == kind:
            return self._item
        await self._close()
        if kind == "message":
            item: dict[str, Any] = {"type": "message", "id": _id("msg"), "status": "in_progress", "role": "assistant",
                                    "content": []}  # fmt: skip
            await self._event("response.output_item.added", output_index=self._index, item=item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            await self._event("response.content_part.added", item_id=item["id"], output_index=self._index,
                              content_index=0, part=part)  # fmt: skip
        else:
            item = {"type": "reasoning", "id": _id("rs"), "summary": []}
            await self._event("response.output_item.added", output_index=self._index, item=item)
            await self._event("response.reasoning_summary_part.added", item_id=item["id"], output_index=self._index,
                              summary_index=0, part={"type": "summary_text", "text": ""})  # fmt: skip
        self._item, self._item_text = item, []
        return item

    async def _close(self) -> None:
        item, self._item = self._item, None
        if item is None:
            return
        text, where = "".join(self._item_text), {"item_id": item["id"], "output_index": self._index}
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            await self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            await self._event("response.content_part.done", **where, content_index=0, part=part)
            item = {**item, "status": "completed", "content": [part]}
        else:
            part = {"type": "summary_text", "text": text}
            await self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
            await self._event("response.reasoning_summary_part.done", **where, summary_index=0, part=part)
            item = {**item, "summary": [part]}
        await self._event("response.output_item.done", output_index=self._index, item=item)
        self.shape.output.append(item)

    async def content(self, text: str) -> None:
        text = self._fresh(text)
        if not text:
            return
        item = await self._open("message")
        self._sent.append(text)
        self._item_text.append(text)
        # The hot path: the event's frame is rendered once per item; a delta fills in its number and text.
        if self._text_frame is None or self._text_frame[0] != item["id"]:
            kind = "response.output_text.delta"
            self._text_frame = (
                item["id"],
                f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":'.encode(),
                f',"item_id":"{item["id"]}","output_index":{self._index},"content_index":0,"delta":"'.encode(),
            )
        _, head, middle = self._text_frame
        escaped = json.dumps(text, ensure_ascii=False)[1:-1].encode()
        number, self._sequence = self._sequence, self._sequence + 1
        await self._write(head + str(number).encode() + middle + escaped + b'","logprobs":[]}\n\n')

    async def thinking(self, text: str) -> None:
        if not text:
            return
        item = await self._open("reasoning")
        self._item_text.append(text)
        await self._event("response.reasoning_summary_text.delta", item_id=item["id"], output_index=self._index,
                          summary_index=0, delta=text)  # fmt: skip

    async def _reasoning(self, text: str) -> None:
        await self.thinking(text)

    async def tool_call(self, call: ClientToolCall) -> None:
        await self.start()
        await self._close()
        self.tool_calls.append(call)
        done = self.shape.call_item(call)
        where = {"item_id": done["id"], "output_index": self._index}
        custom = done["type"] == "custom_tool_call"
        field, prefix = ("input", "response.custom_tool_call_input") if custom else (
            "arguments", "response.function_call_arguments")  # fmt: skip
        await self._event("response.output_item.added", output_index=self._index,
                          item={**done, field: "", "status": "in_progress"})  # fmt: skip
        await self._event(f"{prefix}.delta", **where, delta=done[field])
        await self._event(f"{prefix}.done", **where, **{field: done[field]})
        await self._event("response.output_item.done", output_index=self._index, item=done)
        self.shape.output.append(done)

    async def finish(self, reason: FinishReason, usage: Usage | None) -> None:
        self.finished = True
        await self.start()
        await self._close()
        await self.shape.kept()  # before the client hears of the end, so its next request finds it
        kind, body = self.shape.ending(self.model, reason, usage)
        await self._event(kind, response=body)
        await self.response().write_eof()

    async def _failed(self, failure: ApiFailure) -> None:
        """A response.failed event, with the error in the response."""
        await self._close()
        body = self.shape.response(self.model, "failed", error={"code": failure.code, "message": failure.message})
        await self._event("response.failed", response=body)
