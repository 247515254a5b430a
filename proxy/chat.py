"""POST /v1/chat/completions: the OpenAI request read and checked, then served as one HTTP turn."""

from __future__ import annotations

from aiohttp import web

from proxy.bodies import read_request
from proxy.dialogue import serve
from proxy.keys import SETTINGS
from proxy.schema import ChatCompletionRequest
from proxy.writers import JSONWriter, SSEWriter


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_request(request, ChatCompletionRequest)
    writer: SSEWriter | JSONWriter
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        writer = SSEWriter(request, request.app[SETTINGS].proxy_progress, include_usage)
    else:
        writer = JSONWriter()
    return await serve(request, body, writer)
