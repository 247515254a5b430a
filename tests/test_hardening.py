"""What adversarial testing broke, each as the test that would have caught it (the real CLI, the mock API)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import aiohttp
import pytest

from proxy import listener
from proxy.listener import GuardedSite
from tests.conftest import Daemon, running_commands
from tests.sse import post_sse

KEY_A = "sk-key-of-client-a-0123456789"
KEY_B = "sk-key-of-client-b-0123456789"


async def test_a_client_that_runs_env_reads_no_key_of_the_daemon(
    start_daemon: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROXY_API_KEYS", f"{KEY_A},{KEY_B}")
    daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    completion = await daemon.client(api_key=KEY_B).chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "ENV_TOOL please"}]
    )
    said = completion.choices[0].message.content or ""
    assert "Tool said:" in said and "ANTHROPIC_BASE_URL=" in said, "the agent ran env and Claude read it"
    assert KEY_A not in said and KEY_B not in said and "PROXY_API_KEYS" not in said


@pytest.mark.parametrize("warm", [False, True])
async def test_a_command_that_left_the_clis_session_ends_with_its_process(
    start_daemon: Callable[..., object], warm: bool
) -> None:
    daemon: Daemon = await start_daemon(warm_max=4 if warm else 0)  # type: ignore[assignment]
    completion = await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "ESCAPE_TOOL please"}]
    )
    assert "Tool said: started" in (completion.choices[0].message.content or "")
    if warm:  # kept warm, the process (and what it started) lives on until it is stopped
        assert running_commands(daemon.mark, b"sleep 321"), "the command runs while its process is warm"
        await daemon.engine.close()
    for _ in range(50):
        if not running_commands(daemon.mark, b"sleep 321"):
            break
        await asyncio.sleep(0.1)
    assert running_commands(daemon.mark, b"sleep 321") == [], "nothing the turn started outlives its CLI"


async def health(daemon: Daemon) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/health") as response:
        return response.status, await response.json()


async def test_a_store_that_cannot_be_written_loses_no_answer_and_health_says_so(daemon: Daemon) -> None:
    client = daemon.client()
    await daemon.engine.store.db.execute("PRAGMA query_only = ON")  # as a read-only or full disk refuses writes
    whole = await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "one"}])
    assert whole.choices[0].message.content == "MOCK reply to: one", "the answer Claude gave reached the client"
    streamed = {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "two"}]}
    answer = await post_sse(f"{daemon.url}/v1/chat/completions", streamed)
    assert answer.text == "MOCK reply to: two" and answer.finish_reasons == ["stop"] and answer.data[-1] == "[DONE]"
    status, body = await health(daemon)
    assert status == 503 and body["status"] == "degraded" and "readonly" in str(body["store"]), body
    await daemon.engine.store.db.execute("PRAGMA query_only = OFF")
    await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "three"}])
    assert (await health(daemon))[0] == 200, "a write that succeeds again clears it"


async def test_a_database_deleted_under_the_daemon_is_noticed(daemon: Daemon) -> None:
    daemon.engine.store.path.unlink()
    status, body = await health(daemon)
    assert status == 503 and "was deleted" in str(body["store"]), body


async def raw(url: str, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_a_request_aiohttp_cannot_parse_is_a_json_400_and_one_log_line(
    start_daemon: Callable[..., object], caplog: pytest.LogCaptureFixture
) -> None:
    daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    reader, writer = await raw(daemon.url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request") and b"application/json" in head
    assert json.loads(body)["error"]["code"] == "bad_http_request"
    lines = [r for r in caplog.records if "bad_http_request" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "WARNING" and lines[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no traceback"


async def test_connections_over_the_cap_are_told_at_once_and_the_daemon_stays_reachable(
    start_daemon: Callable[..., object],
) -> None:
    daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    capped = GuardedSite(daemon.runner, "127.0.0.1", 0, max_connections=3)
    await capped.start()
    url = f"http://127.0.0.1:{capped.port}"
    held = [await raw(url, b"GET /health HTTP/1.1\r\nHost: 127") for _ in range(3)]  # headers never finished
    reader, writer = await raw(url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 503") and b'"too_many_connections"' in answer and b"Retry-After" in answer
    for _, held_writer in held:
        held_writer.close()
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # (the daemon counts a connection closed once its handler ended)
            async with http.get(f"{url}/health", headers={"Connection": "close"}) as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.05)
        assert response.status == 200


async def test_headers_that_never_finish_are_dropped_after_the_header_timeout(
    start_daemon: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "HEADER_TIMEOUT", 1.0)
    daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    reader, writer = await raw(daemon.url, b"GET /health HTTP/1.1\r\nHost: 127")
    assert await asyncio.wait_for(reader.read(), 10) == b"", "the daemon closed the connection"
    writer.close()
