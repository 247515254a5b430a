"""POST /v1/messages (Anthropic's Messages API) and its count_tokens: the request read, translated
into chat completion messages, and served as one HTTP turn on the same engine and conversations."""

from __future__ import annotations

import json
import math

from aiohttp import web

from proxy.anthropic_schema import MessagesRequest, to_chat
from proxy.anthropic_writers import MessageStreamWriter, MessageWriter
from proxy.bodies import read_request
from proxy.dialogue import MESSAGES, serve
from proxy.keys import SETTINGS
from proxy.writers import Writer

CHARS_PER_TOKEN = 4  # the estimate count_tokens gives: the CLI has no tokenizer to lend


async def messages(request: web.Request) -> web.StreamResponse:
    body = await read_request(request, MessagesRequest)
    chat = to_chat(body)
    writer: Writer
    if body.stream:
        writer = MessageStreamWriter(request, request.app[SETTINGS].proxy_progress, body.shows_thinking)
    else:
        writer = MessageWriter(body.shows_thinking)
    return await serve(request, chat, writer, MESSAGES)


async def count_tokens(request: web.Request) -> web.Response:
    """An estimate (about four characters a token) of what the request's system, messages and tools hold."""
    body = await read_request(request, MessagesRequest)
    to_chat(body)  # the same checks as a real request
    held = json.dumps([body.model_dump(include={"system", "messages", "tools"}, exclude_none=True)], ensure_ascii=False)
    return web.json_response({"input_tokens": math.ceil(len(held) / CHARS_PER_TOKEN)})
