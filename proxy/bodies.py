"""Reading a request body: JSON, then a schema, with a 400 that says what is wrong and where."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from proxy.errors import ApiException, ApiFailure, bad_request
from proxy.schema import ChatCompletionRequest, SystemMessage

READ_TIMEOUT = 60.0  # seconds a client may take to send its body (a slow one must not hold a handler forever)

Body = TypeVar("Body", bound=BaseModel)


async def read_request(request: web.Request, schema: type[Body]) -> Body:
    """The request body as `schema`, or a 400 that says what is wrong and where."""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            raw = await request.read()
    except TimeoutError:
        raise ApiException(ApiFailure(408, "invalid_request_error",
                                      f"the request body did not arrive within {READ_TIMEOUT:g} s",
                                      code="request_timeout")) from None  # fmt: skip
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply", code="invalid_json") from None
    if _ESCAPED_SURROGATE.search(raw):
        body = _without_lone_surrogates(body)
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise validation_failure(exc) from None


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # only a \u escape can carry a surrogate into JSON
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    """Lone UTF-16 surrogates (JS clients make them slicing inside an emoji) as U+FFFD: they cannot be
    encoded, and the rest of the text is worth keeping. (json pairs the valid pairs itself.)"""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


_BRANCH_NAMES = {
    "system", "developer", "user", "assistant", "tool", "function", "text", "image_url", "refusal", "str",
    "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "base64", "url",  # Anthropic's blocks
}  # fmt: skip


def _param(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as an OpenAI `param`, without the names of union branches."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _BRANCH_NAMES))]
    return ".".join(parts)


def validation_failure(exc: ValidationError) -> ApiException:
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


def chat_request(where: str, **fields: Any) -> ChatCompletionRequest:
    """A chat completion request a dialect translated into; what still cannot form one is a 400 that names
    the dialect's field (`where`), not the translation's."""
    if not fields.get("messages") or all(isinstance(m, SystemMessage) for m in fields["messages"]):
        raise bad_request(f"{where} holds nothing to answer: no user message or tool result", param=where)
    try:
        return ChatCompletionRequest(**fields)
    except ValidationError as exc:
        raise bad_request(f"invalid request: {exc.errors()[0]['msg']} (at {where})", param=where) from None
