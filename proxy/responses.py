"""POST /v1/responses (OpenAI's Responses API, as the Codex CLI and the Agents SDK speak it): the
request read, the responses it follows (`previous_response_id`) put before it, translated into
chat completion messages and served as one HTTP turn on the same engine and conversations.

A response is kept in the store when the request says `store` (the default): its input and
output items, and the response it followed, so `previous_response_id` works after a restart
and only for the API key that made it. Clients that send `store: false` and their whole input
every time (Codex) are recognised by their history, as chat completion clients are.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core import StoredResponse
from proxy.bodies import read_request
from proxy.dialogue import RESPONSES, serve
from proxy.errors import ApiException, ApiFailure
from proxy.keys import SCOPE, SETTINGS, get_engine
from proxy.responses_schema import ResponsesRequest, translate
from proxy.responses_writers import ResponseShape, ResponseStreamWriter, ResponseWriter
from proxy.writers import Writer


def _echo(body: ResponsesRequest) -> dict[str, Any]:
    """The request's fields a response object repeats."""
    return {
        "instructions": body.instructions,
        "tools": body.tools or [],
        "tool_choice": body.tool_choice or "auto",
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "store": body.store,
        "text": body.text.model_dump(by_alias=True, exclude_none=True) if body.text else {"format": {"type": "text"}},
        "reasoning": body.reasoning.model_dump(exclude_none=True) if body.reasoning else None,
        "metadata": body.metadata or {},
        "temperature": None,
        "top_p": None,
        "truncation": "disabled",
    }


async def responses(request: web.Request) -> web.StreamResponse:
    body = await read_request(request, ResponsesRequest)
    store, scope = get_engine(request).store, request[SCOPE]
    earlier: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        chain = await store.response_chain(body.previous_response_id, scope)
        if chain is None:
            raise ApiException(ApiFailure(
                400, "invalid_request_error", f"Previous response with id {body.previous_response_id!r} not found.",
                code="previous_response_not_found", param="previous_response_id",
            ))  # fmt: skip
        earlier = [item for response in chain for item in response.items]
    translated = translate(body, earlier)

    async def keep(response_id: str, output: list[dict[str, Any]]) -> None:
        items = [*translated.items, *output]
        await store.keep_response(StoredResponse(response_id, scope, body.previous_response_id, items))

    shape = ResponseShape(_echo(body), translated.custom_tools, keep if body.store else None)
    writer: Writer
    if body.stream:
        writer = ResponseStreamWriter(request, request.app[SETTINGS].proxy_progress, shape)
    else:
        writer = ResponseWriter(shape)
    return await serve(request, translated.chat, writer, RESPONSES)
