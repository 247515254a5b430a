"""What adversarial testing broke, each as the test that would have caught it (the real CLI, the mock API)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

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
