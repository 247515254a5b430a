"""The client's own tools, offered to Claude over MCP, called and answered across two HTTP requests."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest

from core import Turn
from proxy.keys import PARKED
from tests.conftest import Daemon
from tests.mock_anthropic import CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, INPUT_TOKENS, MockAnthropic
from tests.sse import post_sse

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time in a city", "parameters": {"type": "object"}},
}


def turns_ended(daemon: Daemon) -> list[str]:
    ended: list[str] = []

    async def listener(turn: Turn, error: BaseException | None) -> None:
        ended.append(turn.outcome)

    daemon.engine.on_turn_end(listener)
    return ended


def offered(mock: MockAnthropic, index: int = -1) -> dict[str, Any]:
    return {t["name"]: t for t in mock.requests[index].get("tools", []) if t["name"].startswith("mcp__")}


async def test_the_sdk_tool_loop_across_two_requests(daemon: Daemon, mock_api: MockAnthropic) -> None:
    ended = turns_ended(daemon)
    client = daemon.client()
    messages: list[Any] = [{"role": "user", "content": 'CALL_CLIENT get_weather {"city": "Oslo"}'}]
    first = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me use your tool."
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    tool = offered(mock_api)["mcp__client__get_weather"]
    assert tool["input_schema"]["properties"] == {"city": {"type": "string"}}, "a real tool schema, not a prompt"
    assert tool["description"] == "The weather in a city"
    # The openai SDK's standard loop: run the tool, send the history with the result.
    messages += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id,
                                                                 "content": "sunny, 21 C"}]  # fmt: skip
    second = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Tool said: sunny, 21 C"
    assert second.usage is not None and second.usage.prompt_tokens > 0
    for _ in range(100):
        if ended:
            break
        await asyncio.sleep(0.02)
    assert ended == ["ok"], "one Claude turn served both requests"
    last = mock_api.requests[-1]["messages"][-1]["content"]
    assert any(b.get("type") == "tool_result" and "sunny, 21 C" in json.dumps(b) for b in last)
    # And the conversation goes on in the same session.
    messages.append({"role": "assistant", "content": "Tool said: sunny, 21 C"})
    messages.append({"role": "user", "content": "thanks"})
    third = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    assert third.choices[0].message.content == "MOCK reply to: thanks"
    assert any(t.endswith('CALL_CLIENT get_weather {"city": "Oslo"}') for r, t in mock_api.dialogue() if r == "user")


async def test_streamed_tool_calls(daemon: Daemon, mock_api: MockAnthropic) -> None:
    body: dict[str, Any] = {
        "model": "sonnet", "stream": True, "stream_options": {"include_usage": True}, "tools": [WEATHER, TIME],
        "messages": [{"role": "user", "content": 'CALL_CLIENT get_weather {"city": "Oslo"} CALL_CLIENT get_time {}'}],
    }  # fmt: skip
    answer = await post_sse(f"{daemon.url}/v1/chat/completions", body)
    assert answer.finish_reasons == ["tool_calls"] and answer.data.count("[DONE]") == 1
    deltas = [d for c in answer.chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert [(d["index"], d["function"]["name"]) for d in deltas] == [(0, "get_weather"), (1, "get_time")]
    assert json.loads(deltas[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert [c for c in answer.chunks if c["choices"] == []], "a usage chunk, as asked"
    assistant = {"role": "assistant", "content": answer.text, "tool_calls": [
        {"id": d["id"], "type": "function", "function": d["function"]} for d in deltas]}  # fmt: skip
    body["messages"] += [
        assistant,
        {"role": "tool", "tool_call_id": deltas[0]["id"], "content": "rainy"},
        {"role": "tool", "tool_call_id": deltas[1]["id"], "content": "noon"},
    ]
    answer = await post_sse(f"{daemon.url}/v1/chat/completions", body)
    assert answer.text == "Tool said: rainy" and answer.finish_reasons == ["stop"]
    results = [b for b in mock_api.requests[-1]["messages"][-1]["content"] if b.get("type") == "tool_result"]
    assert len(results) == 2, "both parallel calls were answered"


async def test_claude_code_tools_are_still_internal(daemon: Daemon) -> None:
    completion = await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "USE_TOOL please"}], tools=[WEATHER]
    )
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content == "I will run a command.\n\nTool said: hi"


async def test_tool_choice_none_hides_the_tools(daemon: Daemon, mock_api: MockAnthropic) -> None:
    await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice="none"
    )
    assert offered(mock_api) == {}


async def test_tool_choice_named_is_asked_for(daemon: Daemon, mock_api: MockAnthropic) -> None:
    await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    assert "calling the application's tool `get_weather`" in mock_api.user_texts()[-1]


async def test_a_tool_result_that_never_comes(start_daemon: Callable[..., object], mock_api: MockAnthropic) -> None:
    daemon: Daemon = await start_daemon(tool_result_timeout=1)  # type: ignore[assignment]
    ended = turns_ended(daemon)
    client = daemon.client()
    messages: list[Any] = [{"role": "user", "content": 'CALL_CLIENT get_weather {"city": "Rome"}'}]
    first = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    (call,) = first.choices[0].message.tool_calls or []
    for _ in range(150):  # the parked turn gives up, Claude is told, the turn ends
        if ended:
            break
        await asyncio.sleep(0.05)
    assert ended == ["ok"]
    timeout_result = mock_api.requests[-1]["messages"][-1]["content"]
    assert "did not return a result" in json.dumps(timeout_result)
    # The result arrives late: the conversation is resumed with it, nothing fails.
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "warm, 25 C"}]  # fmt: skip
    late = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    assert late.choices[0].finish_reason == "stop"
    assert "warm, 25 C" in (late.choices[0].message.content or "")
    assert "CALL_CLIENT get_weather" in "\n".join(mock_api.user_texts()), "the earlier turns are there"


@pytest.mark.parametrize(
    ("tools", "problem"),
    [
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}], "not valid JSON Schema"),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}], "of type object"),
        ([{"type": "function", "function": {"name": "f", "parameters": "yes"}}], "not a JSON Schema object"),
        ([WEATHER, WEATHER], "must be unique"),
        ([{"type": "retrieval"}], "only tools of type function"),
        ([{"type": "function", "function": {"description": "no name"}}], "needs a function name"),
    ],
    ids=["bad-schema", "not-object", "not-a-dict", "duplicate-names", "not-function", "no-name"],
)
async def test_bad_tools_are_400(
    daemon: Daemon, mock_api: MockAnthropic, tools: list[dict[str, Any]], problem: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await daemon.client().chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "hi"}], tools=tools
        )
    assert problem in caught.value.message
    assert mock_api.requests == []


async def test_tool_message_for_an_id_never_issued_is_400(daemon: Daemon, mock_api: MockAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await daemon.client().chat.completions.create(
            model="sonnet", tools=[WEATHER],
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},
                      {"role": "tool", "tool_call_id": "call_made_up", "content": "42"}],
        )  # fmt: skip
    assert "call_made_up" in caught.value.message and "no assistant message issued" in caught.value.message
    assert mock_api.requests == []


async def test_names_mcp_forbids_and_fifty_tools(daemon: Daemon, mock_api: MockAnthropic) -> None:
    odd = {"type": "function", "function": {"name": "weather.lookup v2", "parameters": {"type": "object"}}}
    many = [
        {"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}} for i in range(49)
    ]
    completion = await daemon.client().chat.completions.create(
        model="sonnet", tools=[odd, *many],
        messages=[{"role": "user", "content": "CALL_CLIENT weather_lookup_v2 {}"}],
    )  # fmt: skip
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.name == "weather.lookup v2", "the client's own name comes back"
    assert len(offered(mock_api)) == 50


async def test_arguments_that_are_not_json_in_the_history(daemon: Daemon) -> None:
    completion = await daemon.client().chat.completions.create(
        model="sonnet", tools=[WEATHER],
        messages=[
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "?"},
            {"role": "user", "content": "go on"},
        ],
    )  # fmt: skip
    assert (completion.choices[0].message.content or "").endswith("go on")


async def test_a_thirty_megabyte_image(start_daemon: Callable[..., object], mock_api: MockAnthropic) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * (30 * 1024 * 1024)).decode()
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}
    ]
    default: Daemon = await start_daemon()  # type: ignore[assignment]
    with pytest.raises(openai.APIStatusError) as caught:
        await default.client().chat.completions.create(model="sonnet", messages=messages)
    assert caught.value.status_code == 413 and "PROXY_MAX_BODY_MB" in caught.value.message
    await default.engine.close()
    roomy: Daemon = await start_daemon(proxy_max_body_mb=64)  # type: ignore[assignment]
    with pytest.raises(openai.BadRequestError) as caught:
        await roomy.client().chat.completions.create(model="sonnet", messages=messages)
    assert "an image may be at most 5 MB" in caught.value.message
    assert mock_api.requests == []


# -- the loop as real clients run it -------------------------------------------------------------


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return condition()


async def test_results_with_rewritten_ids_and_arguments_continue_the_same_turn(
    daemon: Daemon, mock_api: MockAnthropic
) -> None:
    """What OpenClaw does to the history: ids stripped to [A-Za-z0-9], arguments re-serialised without spaces,
    content as parts, and a message of its own appended to each request that is never resent."""
    ended = turns_ended(daemon)
    client = daemon.client()
    context = {"role": "user", "content": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>> no sessions <<<END>>>"}
    ask = {"role": "user", "content": 'CALL_CLIENT get_weather {"city": "Oslo"}'}
    first = await client.chat.completions.create(model="sonnet", messages=[ask, context], tools=[WEATHER])
    (call,) = first.choices[0].message.tool_calls or []
    stripped = "".join(c for c in call.id if c.isalnum())
    assert stripped != call.id
    rewritten = {
        "role": "assistant",
        "content": [{"type": "text", "text": "Let me use your tool."}],
        "tool_calls": [
            {"id": stripped, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
        ],
    }
    second = await client.chat.completions.create(
        model="sonnet", tools=[WEATHER],
        messages=[ask, rewritten, {"role": "tool", "tool_call_id": stripped, "content": "sunny"}, context],
    )  # fmt: skip
    assert second.choices[0].message.content == "Tool said: sunny"
    assert await wait_for(lambda: ended == ["ok"]), "one Claude turn served both requests"


async def test_the_bridge_waits_for_a_call_the_daemon_has_not_read_yet(
    start_daemon: Callable[..., object], mock_api: MockAnthropic, claude_cli: Any, tmp_path: Any
) -> None:
    """The CLI's MCP call can reach the bridge before the daemon reads the tool_use line: a wrapper that holds
    back that line for 1.5 s makes it happen every time. The client's real result must reach Claude."""
    wrapper = tmp_path / "slow-stdout-claude"
    wrapper.write_text(f"""#!{sys.executable}
import subprocess, sys, time
child = subprocess.Popen([{str(claude_cli)!r}, *sys.argv[1:]], stdout=subprocess.PIPE)
for line in child.stdout:
    if b'"type":"assistant"' in line and b'mcp__client__' in line:
        time.sleep(1.5)
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
sys.exit(child.wait())
""")
    wrapper.chmod(0o755)
    daemon: Daemon = await start_daemon(claude_bin=str(wrapper))  # type: ignore[assignment]
    client = daemon.client()
    for city in ("Oslo", "Rome", "Lima"):
        messages: list[Any] = [{"role": "user", "content": f'CALL_CLIENT get_weather {{"city": "{city}"}}'}]
        first = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
        (call,) = first.choices[0].message.tool_calls or []
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": f"fine in {city}"}]  # fmt: skip
        second = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
        assert second.choices[0].message.content == f"Tool said: fine in {city}"


async def test_a_turn_waiting_for_a_client_holds_no_slot(
    start_daemon: Callable[..., object], mock_api: MockAnthropic
) -> None:
    daemon: Daemon = await start_daemon(max_concurrent=1, queue_wait=1)  # type: ignore[assignment]
    client = daemon.client()
    # A client that never sends the results (langchain's structured output, `stop_on_first_tool`, ...).
    ask = {"role": "user", "content": 'CALL_CLIENT get_weather {"city": "Oslo"}'}
    first = await client.chat.completions.create(model="sonnet", tools=[WEATHER], messages=[ask])
    assert first.choices[0].finish_reason == "tool_calls"
    plain = await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "meanwhile"}])
    assert plain.choices[0].message.content == "MOCK reply to: meanwhile"
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/health") as response:
        health = await response.json()
    assert (health["running_turns"], health["tool_waiting_turns"]) == (0, 1), "waiting for a client is not running"


async def test_each_response_reports_its_own_share_of_the_usage(daemon: Daemon, mock_api: MockAnthropic) -> None:
    client = daemon.client()
    messages: list[Any] = [{"role": "user", "content": 'CALL_CLIENT get_weather {"city": "Oslo"}'}]
    first = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    assert first.usage is not None
    assert first.usage.prompt_tokens == INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS, "the first API call"
    assert first.usage.completion_tokens > 0
    (call,) = first.choices[0].message.tool_calls or []
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]  # fmt: skip
    second = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    assert second.usage is not None
    assert second.usage.prompt_tokens == INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS, "the second API call"
    assert second.usage.completion_tokens > 0


async def test_a_client_that_moves_on_releases_the_waiting_turn_at_once(
    daemon: Daemon, mock_api: MockAnthropic
) -> None:
    """A new message instead of the results: the waiting turn is released at once (its calls get an error), and
    the new message goes on in the same session, not after TOOL_RESULT_TIMEOUT."""
    client = daemon.client()
    messages: list[Any] = [{"role": "user", "content": 'CALL_CLIENT get_weather {"city": "Oslo"}'}]
    first = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "never mind"}]
    started = asyncio.get_running_loop().time()
    second = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    assert asyncio.get_running_loop().time() - started < 30, "not after TOOL_RESULT_TIMEOUT (300 s)"
    assert second.choices[0].message.content == "MOCK reply to: never mind"
    assert "went on without the result" in json.dumps(mock_api.requests[-2]["messages"][-1])
    assert any("CALL_CLIENT get_weather" in t for r, t in mock_api.dialogue() if r == "user"), "the same session"
    assert len(daemon.app[PARKED]) == 0


async def test_a_retried_request_releases_the_turn_it_replaces(daemon: Daemon, mock_api: MockAnthropic) -> None:
    ended = turns_ended(daemon)
    client = daemon.client()
    messages: list[Any] = [{"role": "user", "content": 'CALL_CLIENT get_weather {"city": "Oslo"}'}]
    await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    again = await client.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])
    assert again.choices[0].finish_reason == "tool_calls"
    assert await wait_for(lambda: ended == ["ok"]), "the first turn ended at once"
    assert len(daemon.app[PARKED]) == 1


async def test_waiting_turns_are_bounded(start_daemon: Callable[..., object], mock_api: MockAnthropic) -> None:
    daemon: Daemon = await start_daemon(tool_parked_max=2)  # type: ignore[assignment]
    ended = turns_ended(daemon)
    client = daemon.client()
    for city in ("Oslo", "Rome", "Lima"):
        ask = {"role": "user", "content": f'CALL_CLIENT get_weather {{"city": "{city}"}}'}
        await client.chat.completions.create(model="sonnet", tools=[WEATHER], messages=[ask])
    assert await wait_for(lambda: ended == ["ok"]), "the oldest was released"
    assert len(daemon.app[PARKED]) == 2
    assert "Too many turns were waiting" in json.dumps(mock_api.requests[-1]["messages"][-1])
