"""Bad input gets a clear error, and the daemon goes on serving with nothing left running."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.conftest import Daemon, processes_marked, running_commands
from tests.mock_anthropic import MockAnthropic
from tests.sse import post_sse


async def assert_serves(daemon: Daemon, api_key: str = "sk-anything") -> None:
    completion = await daemon.client(api_key).chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "still there?"}]
    )
    assert completion.choices[0].message.content == "MOCK reply to: still there?"
    assert await daemon.wait_no_strays() == []


async def post_raw(daemon: Daemon, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.url}/v1/chat/completions", data=io.BytesIO(data), headers=headers or {}) as response,
    ):
        return response.status, await response.json()


def assert_openai_error(body: dict, status_type: str | None = None) -> dict:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if status_type:
        assert error["type"] == status_type
    return error


# -- malformed requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b'["a", "list"]', "JSON object"),
        (json.dumps({"model": "sonnet"}).encode(), "messages is required"),
        (json.dumps({"model": "sonnet", "messages": []}).encode(), "at least one message"),
        (json.dumps({"model": "sonnet", "messages": [{"role": "wizard", "content": "hi"}]}).encode(), "unknown role"),
        (
            json.dumps(
                {"model": "sonnet", "messages": [{"role": "user", "content": [{"type": "hologram", "data": "x"}]}]}
            ).encode(),
            "unknown content part type",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}).encode(),
            "last message must be from the user",
        ),
        (
            json.dumps({"model": "sonnet", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8gd29ybGQ="}}]}]}).encode(),
            "not a valid PNG image",
        ),
    ],
    ids=["invalid-json", "not-an-object", "no-messages", "empty-messages", "unknown-role", "unknown-part",
         "ends-with-assistant", "not-an-image"],
)  # fmt: skip
async def test_malformed_request_is_400(daemon: Daemon, mock_api: MockAnthropic, body: bytes, expected: str) -> None:
    status, answer = await post_raw(daemon, body, {"Content-Type": "application/json"})
    assert status == 400
    error = assert_openai_error(answer, "invalid_request_error")
    assert expected in error["message"]
    assert mock_api.requests == [], "nothing reached the CLI"
    await assert_serves(daemon)


async def test_unknown_model_is_404(daemon: Daemon, mock_api: MockAnthropic) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await daemon.client().chat.completions.create(model="gpt-5-turbo", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"
    assert "gpt-5-turbo" in caught.value.message
    assert mock_api.requests == []
    await assert_serves(daemon)


async def test_unknown_route_is_404_in_openai_shape(daemon: Daemon) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/v1/nothing-here") as response:
        assert response.status == 404
        assert_openai_error(await response.json())


async def test_twenty_megabyte_body_is_413(daemon: Daemon, mock_api: MockAnthropic) -> None:
    huge = json.dumps({"model": "sonnet", "messages": [{"role": "user", "content": "x" * (20 * 1024 * 1024)}]})
    status, answer = await post_raw(daemon, huge.encode(), {"Content-Type": "application/json"})
    assert status == 413
    assert assert_openai_error(answer)["code"] == "request_too_large"

    async def chunked():  # no Content-Length: the limit still holds while reading
        for _ in range(20):
            yield b"x" * (1024 * 1024)

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.url}/v1/chat/completions", data=chunked()) as response,
    ):
        assert response.status == 413
    assert mock_api.requests == []
    await assert_serves(daemon)


# -- keys and origins ---------------------------------------------------------------------


async def test_api_keys(start_daemon: Callable[..., object], mock_api: MockAnthropic) -> None:
    daemon: Daemon = await start_daemon(proxy_api_keys="sk-right-one-0123456789,sk-right-two-0123456789")  # type: ignore[assignment]
    with pytest.raises(openai.AuthenticationError) as caught:
        await daemon.client("sk-wrong").chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "invalid_api_key"
    status, _ = await post_raw(daemon, b"{}", {"Content-Type": "application/json"})
    assert status == 401, "no key at all"
    with pytest.raises(openai.AuthenticationError):
        await daemon.client("sk-wrong").models.list()
    assert mock_api.requests == []
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/health") as response:
        assert response.status == 200, "health needs no key"
    await assert_serves(daemon, api_key="sk-right-two-0123456789")
    await assert_serves(daemon, api_key="sk-right-one-0123456789")
    body = json.dumps({"model": "sonnet", "messages": [{"role": "user", "content": "by header"}]}).encode()
    status, answer = await post_raw(
        daemon, body, {"X-Api-Key": "sk-right-one-0123456789", "Content-Type": "application/json"}
    )
    assert status == 200 and answer["choices"][0]["message"]["content"] == "MOCK reply to: by header"


async def test_foreign_browser_origin_is_refused(daemon: Daemon, mock_api: MockAnthropic) -> None:
    body = json.dumps({"model": "sonnet", "messages": [{"role": "user", "content": "USE_TOOL rm -rf"}]}).encode()
    for headers in (
        {"Origin": "https://evil.example", "Content-Type": "text/plain"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://localhost:8080", "Sec-Fetch-Site": "same-site"},
    ):
        status, answer = await post_raw(daemon, body, headers)
        assert status == 403, headers
        assert assert_openai_error(answer)["code"] == "origin_not_allowed"
    async with (
        aiohttp.ClientSession() as session,
        session.options(
            f"{daemon.url}/v1/chat/completions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        ) as response,
    ):
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.url}/health", headers={"Origin": "https://evil.example"}) as response,
    ):
        assert response.status == 403, "every route, /health included"
    assert mock_api.requests == [] and processes_marked(daemon.mark) == []
    await assert_serves(daemon)


async def test_allowed_origin_gets_cors(start_daemon: Callable[..., object]) -> None:
    daemon: Daemon = await start_daemon(proxy_allowed_origins="https://my.app")  # type: ignore[assignment]
    async with aiohttp.ClientSession() as session:
        async with session.options(
            f"{daemon.url}/v1/chat/completions",
            headers={"Origin": "https://my.app", "Access-Control-Request-Method": "POST"},
        ) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "https://my.app"
        async with session.post(
            f"{daemon.url}/v1/chat/completions",
            json={"model": "sonnet", "messages": [{"role": "user", "content": "from my app"}]},
            headers={"Origin": "https://my.app"},
        ) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "https://my.app"


# -- disconnects --------------------------------------------------------------------------


async def test_disconnect_mid_stream_stops_the_tool_and_its_children(daemon: Daemon) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{daemon.url}/v1/chat/completions",
            json={"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "SLEEP_TOOL please"}]},
        ) as response,
    ):
        assert response.status == 200
        await response.content.readline()  # the role chunk: the tool is starting
        for _ in range(50):  # wait until the Bash tool's sleeping command runs
            if running_commands(daemon.mark, b"time.sleep"):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the tool command never started")
    # The client is gone: the turn is interrupted, the tool's command ends, the CLI stays warm or goes.
    for _ in range(80):
        if not running_commands(daemon.mark, b"time.sleep"):
            break
        await asyncio.sleep(0.1)
    assert running_commands(daemon.mark, b"time.sleep") == []
    assert await daemon.wait_no_strays(within=8) == []
    await assert_serves(daemon)


async def test_disconnect_while_text_streams(daemon: Daemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.app")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{daemon.url}/v1/chat/completions",
            json={"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "LONG400 SLOW"}]},
        ) as response,
    ):
        for _ in range(5):
            await response.content.readline()
    assert await daemon.wait_no_strays(within=8) == []
    assert any("path=/v1/chat/completions status=499" in r.getMessage() for r in caplog.records), "logged"
    await assert_serves(daemon)


@pytest.mark.parametrize("stream", [True, False])
async def test_disconnect_before_the_first_byte(daemon: Daemon, mock_api: MockAnthropic, stream: bool) -> None:
    client = daemon.client(timeout=1.5)
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "HANG forever"}], stream=stream
        )
    assert mock_api.hanging == 1
    assert await daemon.wait_no_strays(within=8) == []
    await assert_serves(daemon)


# -- the CLI misbehaving --------------------------------------------------------------------


@pytest.fixture
def switchable_cli(tmp_path: Path, claude_cli: Path) -> Callable[..., Path]:
    """A CLAUDE_BIN whose behaviour a test can change between requests."""
    path = tmp_path / "bin" / "claude"
    path.parent.mkdir()

    def use(script: str | None = None) -> Path:
        if script is None:
            path.write_text(f'#!/bin/sh\nexec "{claude_cli}" "$@"\n')
        else:
            path.write_text(script)
        path.chmod(0o755)
        return path

    return use


async def test_cli_missing_is_503(start_daemon: Callable[..., object], switchable_cli: Callable[..., Path]) -> None:
    path = switchable_cli()
    daemon: Daemon = await start_daemon(claude_bin=str(path))  # type: ignore[assignment]
    path.unlink()
    with pytest.raises(openai.APIStatusError) as caught:
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503
    assert "not found" in caught.value.message and "CLAUDE_BIN" in caught.value.message
    switchable_cli()
    await assert_serves(daemon)


async def test_cli_exiting_with_only_stderr_is_502(
    start_daemon: Callable[..., object], switchable_cli: Callable[..., Path]
) -> None:
    path = switchable_cli("#!/bin/sh\necho 'fatal: the frobnicator is jammed' >&2\nexit 3\n")
    daemon: Daemon = await start_daemon(claude_bin=str(path))  # type: ignore[assignment]
    with pytest.raises(openai.APIStatusError) as caught:
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert "status 3" in caught.value.message and "frobnicator is jammed" in caught.value.message
    answer = await post_sse(
        f"{daemon.url}/v1/chat/completions",
        {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status == 502 and "frobnicator" in answer.data[0]
    switchable_cli()
    await assert_serves(daemon)


async def test_cli_printing_a_non_json_line_is_tolerated(
    start_daemon: Callable[..., object], switchable_cli: Callable[..., Path], claude_cli: Path
) -> None:
    path = switchable_cli(f'#!/bin/sh\necho "Welcome! this is not JSON"\nexec "{claude_cli}" "$@"\n')
    daemon: Daemon = await start_daemon(claude_bin=str(path))  # type: ignore[assignment]
    await assert_serves(daemon)


async def test_cli_refusing_bypass_permissions_as_root_is_503(
    start_daemon: Callable[..., object], switchable_cli: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = switchable_cli()
    if os.geteuid() == 0:  # the real CLI refuses: this is what CI (running as root) sees
        monkeypatch.delenv("IS_SANDBOX")
    else:  # elsewhere, its exact words
        refusal = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
        switchable_cli(f"#!/bin/sh\necho '{refusal}' >&2\nexit 1\n")
    daemon: Daemon = await start_daemon(claude_bin=str(path))  # type: ignore[assignment]
    with pytest.raises(openai.APIStatusError) as caught:
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503
    assert "IS_SANDBOX" in caught.value.message
    monkeypatch.setenv("IS_SANDBOX", "1")
    switchable_cli()
    await assert_serves(daemon)


# -- the API behind the CLI failing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "status", "error_class"),
    [
        ("ERR429", 429, openai.RateLimitError),
        ("ERR500", 502, openai.InternalServerError),
        ("ERR529", 502, openai.InternalServerError),
        ("ERR401", 401, openai.AuthenticationError),
        ("ERR400", 502, openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_are_answered_with_their_status(
    daemon: Daemon, prompt: str, status: int, error_class: type[openai.APIStatusError], stream: bool
) -> None:
    with pytest.raises(error_class) as caught:
        result = await daemon.client().chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": prompt}], stream=stream
        )
        if stream:
            async for _ in result:  # type: ignore[union-attr]
                pass
    assert caught.value.status_code == status
    assert f"mock {prompt[3:]}" in caught.value.message, "the CLI's own message reaches the client"
    await assert_serves(daemon)


async def test_api_hanging_hits_the_activity_timeout(
    start_daemon: Callable[..., object], mock_api: MockAnthropic
) -> None:
    daemon: Daemon = await start_daemon(activity_timeout=2)  # type: ignore[assignment]
    with pytest.raises(openai.APIStatusError) as caught:
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "HANG"}])
    assert caught.value.status_code == 504
    assert "printed nothing for 2 s" in caught.value.message
    assert await daemon.wait_no_strays(within=8) == []
    # Stalling after the first text: the stream ends with an error event and [DONE], never hangs.
    answer = await post_sse(
        f"{daemon.url}/v1/chat/completions",
        {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "STALL now"}]},
    )
    assert answer.status == 200
    assert answer.text == "MOCK "
    assert [e["code"] for e in answer.errors] == ["activity_timeout"]
    assert answer.data[-1] == "[DONE]" and answer.data.count("[DONE]") == 1
    assert mock_api.hanging == 2
    await assert_serves(daemon)


# -- load ---------------------------------------------------------------------------------------


async def most_running(daemon: Daemon, task: asyncio.Future) -> int:
    """The most turns the engine ran at once while `task` ran (warm idle processes do not run)."""
    most = 0
    while not task.done():
        most = max(most, daemon.engine.running)
        await asyncio.sleep(0.01)
    return most


async def test_sixteen_requests_with_four_slots_all_complete(
    start_daemon: Callable[..., object], mock_api: MockAnthropic
) -> None:
    daemon: Daemon = await start_daemon(max_concurrent=4, queue_wait=120)  # type: ignore[assignment]
    client = daemon.client(timeout=120)

    async def one(i: int) -> str:
        completion = await client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": f"request {i} LONG30 SLOW"}]
        )
        return completion.choices[0].message.content or ""

    work = asyncio.gather(*(one(i) for i in range(16)))
    most = await most_running(daemon, work)
    answers = await work
    assert answers == ["".join(f"w{n} " for n in range(30))] * 16
    assert most <= 4 and mock_api.max_in_flight <= 4
    assert most == 4 and mock_api.max_in_flight == 4, "the four slots were used"
    await assert_serves(daemon)


async def test_saturated_requests_get_429_with_retry_after(
    start_daemon: Callable[..., object], mock_api: MockAnthropic
) -> None:
    daemon: Daemon = await start_daemon(max_concurrent=4, queue_wait=0.3)  # type: ignore[assignment]
    client = daemon.client(timeout=120)

    async def one(i: int) -> str | openai.RateLimitError:
        try:
            completion = await client.chat.completions.create(
                model="sonnet", messages=[{"role": "user", "content": f"LONG60 SLOW {i}"}]
            )
        except openai.RateLimitError as exc:
            return exc
        return completion.choices[0].message.content or ""

    results = await asyncio.gather(*(one(i) for i in range(16)))
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    served = [r for r in results if isinstance(r, str)]
    assert len(served) >= 4 and len(refused) >= 1 and len(served) + len(refused) == 16
    for error in refused:
        assert error.code == "proxy_saturated"
        assert int(error.response.headers["Retry-After"]) > 0
    assert all(s.startswith("w0 w1 w2") for s in served)
    assert mock_api.max_in_flight <= 4
    # Refused turns are counted like any other, under a label of the fixed set.
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/metrics") as response:
        metrics = await response.text()
    assert f'claude_max_turns_total{{dialect="chat",face="http",outcome="saturated"}} {float(len(refused))}' in metrics
    await assert_serves(daemon)
