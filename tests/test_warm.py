"""Warm sessions on the real CLI: the next turn of a conversation goes to the CLI that served the last one."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import aiohttp
import openai
import pytest

from core import Turn
from tests.conftest import Daemon, running_commands, wait_no_processes
from tests.mock_anthropic import MockAnthropic


def track_sources(daemon: Daemon) -> list[tuple[str, str]]:
    """(process source, outcome) of every turn, in order, as the engine reports them."""
    seen: list[tuple[str, str]] = []

    async def listener(turn: Turn, error: BaseException | None) -> None:
        seen.append((turn.source, turn.outcome))

    daemon.engine.on_turn_end(listener)
    return seen


async def say(daemon: Daemon, text: str, conversation: str = "c1", **kwargs: object) -> str:
    completion = await daemon.client(**kwargs).chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": text}], extra_headers={"X-Conversation-Id": conversation}
    )
    return completion.choices[0].message.content or ""


async def settled(daemon: Daemon, sources: list, count: int) -> None:
    for _ in range(200):
        if len(sources) >= count and daemon.engine.running == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {len(sources)} turns ended")


async def test_the_next_turn_goes_to_the_warm_process(daemon: Daemon, mock_api: MockAnthropic) -> None:
    sources = track_sources(daemon)
    await say(daemon, "first")
    await settled(daemon, sources, 1)
    pids = daemon.engine.pool.pids()
    assert len(pids) == 1, "kept warm after the turn"
    await say(daemon, "second")
    await say(daemon, "third")
    await settled(daemon, sources, 3)
    assert [s for s, _ in sources] == ["cold", "warm", "warm"]
    assert daemon.engine.pool.pids() == pids, "the same process served every turn"
    assert [t for r, t in mock_api.dialogue() if r == "user"] == ["first", "second", "third"]


async def test_warm_process_killed_between_turns_is_replaced(daemon: Daemon, mock_api: MockAnthropic) -> None:
    sources = track_sources(daemon)
    await say(daemon, "remember OTTER")
    await settled(daemon, sources, 1)
    (pid,) = daemon.engine.pool.pids()
    os.killpg(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    assert await say(daemon, "what animal?") == "MOCK reply to: what animal?"
    await settled(daemon, sources, 2)
    assert sources[1] == ("cold", "ok"), "a cold --resume took over, unseen by the client"
    assert ("user", "remember OTTER") in mock_api.dialogue()
    assert await daemon.wait_no_strays() == []


async def test_warm_process_hanging_mid_turn_trips_the_watchdog(
    start_daemon: Callable[..., object], mock_api: MockAnthropic
) -> None:
    daemon: Daemon = await start_daemon(activity_timeout=2)  # type: ignore[assignment]
    sources = track_sources(daemon)
    await say(daemon, "before the hang")
    await settled(daemon, sources, 1)
    with pytest.raises(openai.APIStatusError) as caught:
        await say(daemon, "HANG now")
    assert caught.value.status_code == 504
    await settled(daemon, sources, 2)
    assert sources[1] == ("warm", "timeout")
    assert daemon.engine.pool.pids() == set(), "a process that hung is not kept"
    assert await daemon.wait_no_strays() == []
    assert await say(daemon, "after the hang") == "MOCK reply to: after the hang"
    assert ("user", "before the hang") in mock_api.dialogue()


async def test_two_requests_for_one_conversation_at_once(daemon: Daemon, mock_api: MockAnthropic) -> None:
    sources = track_sources(daemon)
    await say(daemon, "opening")
    await settled(daemon, sources, 1)
    answers = await asyncio.gather(say(daemon, "left SLOW"), say(daemon, "right SLOW"))
    assert sorted(answers) == ["MOCK reply to: left SLOW", "MOCK reply to: right SLOW"]
    await settled(daemon, sources, 3)
    assert [s for s, _ in sources] == ["cold", "warm", "warm"]
    assert mock_api.max_in_flight == 1
    users = [t for r, t in mock_api.dialogue() if r == "user"]
    assert users[0] == "opening" and sorted(users[1:]) == ["left SLOW", "right SLOW"]


async def test_more_conversations_than_the_cap(start_daemon: Callable[..., object], mock_api: MockAnthropic) -> None:
    daemon: Daemon = await start_daemon(warm_max=2)  # type: ignore[assignment]
    sources = track_sources(daemon)
    for name in ("a", "b", "c"):
        await say(daemon, f"hello {name}", conversation=name)
    await settled(daemon, sources, 3)
    assert daemon.engine.pool.size == 2
    await say(daemon, "back to a", conversation="a")  # evicted: least recently used
    await say(daemon, "back to c", conversation="c")  # still warm
    await settled(daemon, sources, 5)
    assert [s for s, _ in sources] == ["cold", "cold", "cold", "cold", "warm"]
    assert ("user", "hello a") in mock_api.dialogue(-2), "the evicted conversation resumed cold, context intact"
    clis = [p for p in running_commands(daemon.mark, b"--output-format")]
    for _ in range(50):
        clis = [p for p in running_commands(daemon.mark, b"--output-format")]
        if len(clis) <= 2:
            break
        await asyncio.sleep(0.1)
    assert len(clis) == 2, "evicted processes are gone"


async def test_idle_warm_processes_are_stopped(start_daemon: Callable[..., object]) -> None:
    daemon: Daemon = await start_daemon(warm_idle=1)  # type: ignore[assignment]
    sources = track_sources(daemon)
    await say(daemon, "short-lived")
    await settled(daemon, sources, 1)
    assert daemon.engine.pool.size == 1
    await asyncio.sleep(1.5)
    assert daemon.engine.pool.size == 0
    assert await wait_no_processes(daemon.mark, within=5) == []


async def test_disconnect_during_a_warm_turn_then_the_next_turn(daemon: Daemon, mock_api: MockAnthropic) -> None:
    sources = track_sources(daemon)
    await say(daemon, "remember HERON")
    await settled(daemon, sources, 1)
    (pid,) = daemon.engine.pool.pids()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{daemon.url}/v1/chat/completions",
            headers={"X-Conversation-Id": "c1"},
            json={"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "SLEEP_TOOL go"}]},
        ) as response,
    ):
        await response.content.readline()
        while not running_commands(daemon.mark, b"time.sleep"):
            await asyncio.sleep(0.05)
    # at once, the next turn of the same conversation
    assert await say(daemon, "which bird?") == "MOCK reply to: which bird?"
    await settled(daemon, sources, 3)
    assert sources[1] == ("warm", "cancelled") and sources[2][0] == "warm"
    assert daemon.engine.pool.pids() == {pid}, "the interrupt kept the same process warm"
    for _ in range(100):  # the CLI ends the interrupted tool's command on its own, soon after the interrupt
        if not running_commands(daemon.mark, b"time.sleep"):
            break
        await asyncio.sleep(0.1)
    assert running_commands(daemon.mark, b"time.sleep") == [], "the interrupted tool's command is gone"
    assert ("user", "remember HERON") in mock_api.dialogue()


async def test_model_change_starts_a_new_process(daemon: Daemon, mock_api: MockAnthropic) -> None:
    sources = track_sources(daemon)
    client = daemon.client()
    headers = {"X-Conversation-Id": "m"}
    for model in ("sonnet", "sonnet", "haiku"):
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"on {model}"}], extra_headers=headers
        )
    await settled(daemon, sources, 3)
    assert [s for s, _ in sources] == ["cold", "warm", "cold"]
    assert "haiku" in mock_api.requests[-1]["model"]
    assert ("user", "on sonnet") in mock_api.dialogue(), "still the same conversation"


async def test_spares_serve_new_conversations(start_daemon: Callable[..., object]) -> None:
    # Spares are started with DEFAULT_MODEL, so they serve requests for that model.
    daemon: Daemon = await start_daemon(warm_spares=1, default_model="sonnet")  # type: ignore[assignment]
    sources = track_sources(daemon)
    for _ in range(100):
        if daemon.engine.pool.spares == 1:
            break
        await asyncio.sleep(0.05)
    assert daemon.engine.pool.spares == 1
    await say(daemon, "first message", conversation="fresh")
    await settled(daemon, sources, 1)
    assert sources == [("spare", "ok")]
    for _ in range(100):
        if daemon.engine.pool.spares == 1:
            break
        await asyncio.sleep(0.05)
    assert daemon.engine.pool.spares == 1, "a new spare replaces the one taken"


async def test_shutdown_with_warm_processes_leaves_nothing(start_daemon: Callable[..., object]) -> None:
    daemon: Daemon = await start_daemon(warm_spares=1)  # type: ignore[assignment]
    sources = track_sources(daemon)
    for name in ("x", "y", "z"):
        await say(daemon, "hi", conversation=name)
    await settled(daemon, sources, 3)
    assert daemon.engine.pool.size == 3
    await daemon.engine.close()
    assert await wait_no_processes(daemon.mark, within=5) == []
