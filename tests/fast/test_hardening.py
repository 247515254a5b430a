"""Hostile and careless HTTP input on the faces (a scripted engine): always a 4xx in the API's shape, never a 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.fast.test_faces import Face, done, start  # noqa: F401  (start: the fixture)

RAW_BODY = json.dumps({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}).encode()


async def raw_request(
    face: Face, head: bytes, body: bytes = RAW_BODY, host: bytes = b"127.0.0.1"
) -> tuple[int, dict[str, Any]]:
    """One request written byte for byte (clients' libraries refuse to send such headers)."""
    address, port = face.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(address, int(port))
    length = b"Content-Length: " + str(len(body)).encode()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n"
                 + head + length + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload or b"{}")


async def test_a_lone_surrogate_is_replaced_and_the_turn_runs(start: Callable[..., Any]) -> None:  # noqa: F811
    face: Face = await start([[done("ok")]])
    body = b'{"model": "sonnet", "messages": [{"role": "user", "content": "half an emoji: \\ud83d, rest"}]}'
    status, answer = await raw_request(face, b"", body)
    assert status == 200, answer
    (request,) = face.engine.requests
    prompt = json.dumps(request.prompt_for(None), ensure_ascii=False)
    assert "half an emoji: \ufffd, rest" in prompt


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"X-Conversation-Id: \xff\xfe-not-utf8\r\n", 400),
        (b"X-Conversation-Id: two\tparts\r\n", 400),
    ],
)
async def test_bad_header_bytes_are_a_4xx(start: Callable[..., Any], head: bytes, status: int) -> None:  # noqa: F811
    face: Face = await start([[done("never")]])
    answered, answer = await raw_request(face, head)
    assert answered == status and answer["error"]["type"] == "invalid_request_error", answer
    assert not face.engine.requests


async def test_a_key_that_is_not_utf8_is_a_401(start: Callable[..., Any]) -> None:  # noqa: F811
    face: Face = await start([[done("never")]], proxy_api_keys="sk-key-of-client-a-0123456789")
    status, answer = await raw_request(face, b"Authorization: Bearer sk-\xff\xfe\r\n")
    assert status == 401 and answer["error"]["code"] == "invalid_api_key", answer


async def test_deeply_nested_json_is_a_400(start: Callable[..., Any]) -> None:  # noqa: F811
    face: Face = await start([[done("never")]])
    status, answer = await raw_request(face, b"", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested too deeply" in answer["error"]["message"], answer


@pytest.mark.parametrize(("host", "status"), [(b"evil.example:3456", 403), (b"localhost:3456", 200),
                                              (b"[::1]:3456", 200), (b"127.0.0.1", 200)])  # fmt: skip
async def test_without_keys_only_loopback_names_are_served(
    start: Callable[..., Any],  # noqa: F811
    host: bytes,
    status: int,
) -> None:
    """DNS rebinding: a page at evil.example, its name rebound to 127.0.0.1, sends its own name as Host."""
    face: Face = await start([[done("ok")]])
    answered, answer = await raw_request(face, b"", host=host)
    assert answered == status, answer
    if status == 403:
        assert answer["error"]["code"] == "host_not_allowed" and not face.engine.requests


async def test_a_body_that_never_arrives_is_a_408(
    start: Callable[..., Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import proxy.bodies

    monkeypatch.setattr(proxy.bodies, "READ_TIMEOUT", 0.5)
    face: Face = await start([[done("never")]])
    address, port = face.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(address, int(port))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"model\": ")  # fmt: skip
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read(4096)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:300]
    assert not face.engine.requests
