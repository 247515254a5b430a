"""The Anthropic Messages API on the real Claude Code CLI, driven by the official `anthropic` SDK."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.conftest import Daemon
from tests.mock_anthropic import CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, INPUT_TOKENS, MockAnthropic

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def turn_request(mock: MockAnthropic, text: str) -> int:
    """The index of the last API request that carried `text` (the CLI makes requests of its own besides)."""
    return max(i for i, body in enumerate(mock.requests) if text in json.dumps(body.get("messages")))


async def test_create_answers_with_anthropics_usage(daemon: Daemon) -> None:
    message = await daemon.anthropic().messages.create(
        model="claude-sonnet-4",
        max_tokens=1024,
        messages=user("hello there"),  # type: ignore[arg-type]
    )
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "MOCK reply to: hello there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.model == "claude-sonnet-4", "the model asked for, as chat completions report it"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        INPUT_TOKENS, CACHE_READ_TOKENS, CACHE_WRITE_TOKENS,
    ), "the cache apart from input, as Anthropic counts it"  # fmt: skip
    assert usage.output_tokens > 0


async def test_stream_follows_anthropics_event_sequence(daemon: Daemon) -> None:
    client = daemon.anthropic()
    async with client.messages.stream(model="sonnet", max_tokens=1024, messages=user("LONG30 words")) as stream:  # type: ignore[arg-type]
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "".join(f"w{i} " for i in range(30)) == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert final.usage.input_tokens == INPUT_TOKENS, "usage comes with message_delta"
    async with aiohttp.ClientSession() as http, http.post(
        f"{daemon.url}/v1/messages", json={"model": "sonnet", "max_tokens": 10, "stream": True,
                                           "messages": user("wire check")},
    ) as response:  # fmt: skip
        assert response.status == 200 and response.content_type == "text/event-stream"
        wire = (await response.read()).decode()
    kinds = [line.removeprefix("event: ") for line in wire.splitlines() if line.startswith("event: ")]
    while "content_block_delta" in kinds[kinds.index("content_block_start") + 1 :]:
        kinds.remove("content_block_delta")
    assert kinds == ["message_start", "ping", "content_block_start", "content_block_stop", "message_delta",
                     "message_stop"], kinds  # fmt: skip


async def test_system_travels_like_system_text_and_the_conversation_goes_on(
    daemon: Daemon, mock_api: MockAnthropic
) -> None:
    client = daemon.anthropic()
    history: list[Any] = user("first question")
    first = await client.messages.create(model="sonnet", max_tokens=100, system="Be brief.", messages=history)
    told = turn_request(mock_api, "first question")
    assert any("<instructions>\nBe brief.\n</instructions>" in text for _, text in mock_api.dialogue(told))
    history += [{"role": "assistant", "content": first.content}, {"role": "user", "content": "second question"}]
    second = await client.messages.create(model="sonnet", max_tokens=100, system="Be brief.", messages=history)
    assert second.content[0].text == "MOCK reply to: second question"  # type: ignore[union-attr]
    dialogue = mock_api.dialogue(turn_request(mock_api, "second question"))
    assert dialogue[-2] == ("assistant", "MOCK reply to: first question"), "turn 1 is a real turn of the session"
    assert sum("<conversation_history>" in text for _, text in dialogue) == 0, "resumed, not retold"


async def test_the_sdk_tool_loop_goes_on_with_the_same_claude_turn(daemon: Daemon, mock_api: MockAnthropic) -> None:
    client = daemon.anthropic()
    history: list[Any] = user('CALL_CLIENT get_weather {"city": "Oslo"}')
    first = await client.messages.create(model="sonnet", max_tokens=100, messages=history, tools=[WEATHER])  # type: ignore[list-item]
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Oslo"})
    history += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]},
    ]
    asked = len(mock_api.requests)
    second = await client.messages.create(model="sonnet", max_tokens=100, messages=history, tools=[WEATHER])  # type: ignore[list-item]
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "Tool said: sunny, 21 C"  # type: ignore[union-attr]
    assert len(mock_api.requests) == asked + 1, "the waiting turn went on (no new session was told the story)"


async def test_a_streamed_tool_call_is_a_tool_use_block(daemon: Daemon) -> None:
    client = daemon.anthropic()
    async with client.messages.stream(
        model="sonnet",
        max_tokens=100,
        messages=user('CALL_CLIENT get_weather {"city": "Rome"}'),
        tools=[WEATHER],  # type: ignore[arg-type, list-item]
    ) as stream:
        final = await stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"] and final.stop_reason == "tool_use"
    assert final.content[1].input == {"city": "Rome"}  # type: ignore[union-attr]


async def test_thinking_shows_only_when_asked_for(daemon: Daemon) -> None:
    client = daemon.anthropic()
    plain = await client.messages.create(model="sonnet", max_tokens=100, messages=user("THINK quietly"))  # type: ignore[arg-type]
    assert [block.type for block in plain.content] == ["text"]
    thinking = {"type": "enabled", "budget_tokens": 2000}
    shown = await client.messages.create(model="sonnet", max_tokens=4000, messages=user("THINK aloud"),  # type: ignore[arg-type]
                                         thinking=thinking)  # type: ignore[arg-type]  # fmt: skip
    assert [block.type for block in shown.content] == ["thinking", "text"]
    assert shown.content[0].thinking == "Let me think about this mock."  # type: ignore[union-attr]


async def test_structured_output_through_output_format(daemon: Daemon) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    message = await daemon.anthropic().messages.create(
        model="sonnet", max_tokens=100, messages=user('STRUCTURED {"city": "Lima"}'),  # type: ignore[arg-type]
        extra_body={"output_format": {"type": "json_schema", "schema": schema}},
    )  # fmt: skip
    assert json.loads(message.content[0].text) == {"city": "Lima"}  # type: ignore[union-attr]


async def test_count_tokens_estimates(daemon: Daemon) -> None:
    counted = await daemon.anthropic().messages.count_tokens(model="sonnet", messages=user("x" * 400))  # type: ignore[arg-type]
    assert 100 <= counted.input_tokens <= 200


async def test_errors_have_anthropics_shape(daemon: Daemon) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await daemon.anthropic().messages.create(model="gpt-5", max_tokens=10, messages=user("hi"))  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == "not_found_error" and "gpt-5" in body["error"]["message"]


async def test_keys_work_as_x_api_key_and_as_bearer(start_daemon: Callable[..., object]) -> None:
    daemon: Daemon = await start_daemon(proxy_api_keys="key-a-0123456789abcdef")  # type: ignore[assignment]
    by_header = await daemon.anthropic(api_key="key-a-0123456789abcdef").messages.create(
        model="sonnet",
        max_tokens=10,
        messages=user("by x-api-key"),  # type: ignore[arg-type]
    )
    assert by_header.content[0].text == "MOCK reply to: by x-api-key"  # type: ignore[union-attr]
    bearer = daemon.anthropic(api_key=None, auth_token="key-a-0123456789abcdef")
    by_bearer = await bearer.messages.create(model="sonnet", max_tokens=10, messages=user("by bearer"))  # type: ignore[arg-type]
    assert by_bearer.content[0].text == "MOCK reply to: by bearer"  # type: ignore[union-attr]
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await daemon.anthropic(api_key="key-b-0123456789abcdef").messages.create(
            model="sonnet", max_tokens=10, messages=user("hi")
        )  # type: ignore[arg-type]
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"messages": user("hi")}, "model"),
        ({"model": "sonnet", "messages": []}, "messages"),
        ({"model": "sonnet", "messages": [{"role": "system", "content": "x"}]}, "role"),
        ({"model": "sonnet", "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]}, "video"),
        ({"model": "sonnet", "messages": [{"role": "user", "content": 5}]}, "content"),
        ({"model": "sonnet", "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_never", "content": "x"}]}]}, "toolu_never"),
        ({"model": "sonnet", "messages": user("hi"), "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
         "server tools"),
        ({"model": "sonnet", "messages": user("hi"), "output_format": {"type": "json_schema", "schema": {"type": 7}}},
         "output_format.schema"),
        ({"model": "sonnet", "messages": user("hi"), "tools": [WEATHER], "tool_choice": {"type": "sometimes"}},
         "tool_choice"),
        ({"model": "sonnet", "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]}, "not fetched"),
    ],
)  # fmt: skip
async def test_bad_requests_are_400_in_anthropics_shape(
    daemon: Daemon, mock_api: MockAnthropic, body: dict[str, Any], says: str
) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{daemon.url}/v1/messages", json=body) as response:
        status, answer = response.status, await response.json()
    assert status == 400 and answer["type"] == "error", answer
    assert answer["error"]["type"] == "invalid_request_error" and says in answer["error"]["message"], answer
    assert not mock_api.requests, "no CLI ran"


async def test_a_huge_body_is_413_in_anthropics_shape(daemon: Daemon) -> None:
    huge = io.BytesIO(json.dumps({"model": "sonnet", "messages": user("x" * (20 * 1024 * 1024))}).encode())
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.post(f"{daemon.url}/v1/messages", data=huge,
                                                           headers=headers) as response:  # fmt: skip
        status, answer = response.status, await response.json()
    assert status == 413 and answer["error"]["type"] == "request_too_large", answer


async def test_a_stream_that_fails_midway_ends_with_an_error_event(start_daemon: Callable[..., object]) -> None:
    daemon: Daemon = await start_daemon(activity_timeout=2)  # type: ignore[assignment]
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with daemon.anthropic().messages.stream(model="sonnet", max_tokens=10, messages=user("STALL now")) as s:  # type: ignore[arg-type]
            async for _ in s:
                pass
    assert caught.value.body["error"]["type"] == "timeout_error"  # type: ignore[index]
    assert "printed nothing for 2 s" in caught.value.message
    message = await daemon.anthropic().messages.create(model="sonnet", max_tokens=10, messages=user("after"))  # type: ignore[arg-type]
    assert message.content[0].text == "MOCK reply to: after", "the daemon serves on"  # type: ignore[union-attr]


async def test_the_sdk_lists_and_retrieves_models(daemon: Daemon) -> None:
    client = daemon.anthropic()
    listed = [card.id async for card in client.models.list()]
    assert {"claude-sonnet-4", "opus", "haiku"} <= set(listed)
    assert (await client.models.retrieve("claude-opus-4-5-20251101")).id == "claude-opus-4-5-20251101"
    with pytest.raises(anthropic.NotFoundError):
        await client.models.retrieve("gpt-5")
