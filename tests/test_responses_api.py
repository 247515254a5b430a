"""The Responses API on the real Claude Code CLI, driven by the official `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import Daemon
from tests.mock_anthropic import CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, INPUT_TOKENS, MockAnthropic
from tests.sse import post_sse

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def turn_request(mock: MockAnthropic, text: str) -> int:
    """The index of the last API request that carried `text` (the CLI makes requests of its own besides)."""
    return max(i for i, body in enumerate(mock.requests) if text in json.dumps(body.get("messages")))


async def test_create_answers_with_usage(daemon: Daemon) -> None:
    response = await daemon.client().responses.create(model="claude-sonnet-4", input="hello there")
    assert response.output_text == "MOCK reply to: hello there"
    assert response.status == "completed" and response.id.startswith("resp_") and response.model == "claude-sonnet-4"
    usage = response.usage
    assert usage is not None and usage.input_tokens == INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS
    assert usage.input_tokens_details.cached_tokens == CACHE_READ_TOKENS and usage.output_tokens > 0


async def test_stream_follows_openais_event_sequence(daemon: Daemon) -> None:
    stream = await daemon.client().responses.create(model="sonnet", input="LONG20 words", stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == "".join(f"w{i} " for i in range(20))
    assert events[-1].response.output_text == text  # type: ignore[union-attr]
    shape = [k for k in kinds if k != "response.output_text.delta"]
    assert shape == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]  # fmt: skip


async def test_instructions_travel_like_system_text(daemon: Daemon, mock_api: MockAnthropic) -> None:
    await daemon.client().responses.create(model="sonnet", instructions="Be brief.", input="why is the sky blue")
    told = turn_request(mock_api, "why is the sky blue")
    assert any("<instructions>\nBe brief.\n</instructions>" in text for _, text in mock_api.dialogue(told))


async def test_previous_response_id_continues_the_conversation(daemon: Daemon, mock_api: MockAnthropic) -> None:
    client = daemon.client()
    first = await client.responses.create(model="sonnet", input="first question")
    second = await client.responses.create(model="sonnet", input="second question", previous_response_id=first.id)
    assert second.output_text == "MOCK reply to: second question" and second.previous_response_id == first.id
    dialogue = mock_api.dialogue(turn_request(mock_api, "second question"))
    assert dialogue[-2] == ("assistant", "MOCK reply to: first question"), "turn 1 is a real turn of the session"
    assert not any("<conversation_history>" in text for _, text in dialogue), "resumed, not retold"


async def test_previous_response_id_survives_a_restart(start_daemon: Callable[..., object], tmp_path: Any) -> None:
    first_daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    first = await first_daemon.client().responses.create(model="sonnet", input="remember me")
    await first_daemon.engine.close()
    second_daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    second = await second_daemon.client().responses.create(
        model="sonnet", input="do you?", previous_response_id=first.id
    )
    assert second.output_text == "MOCK reply to: do you?"


async def test_an_unknown_or_other_keys_response_is_not_found(start_daemon: Callable[..., object]) -> None:
    daemon: Daemon = await start_daemon(proxy_api_keys="key-a-0123456789abcdef,key-b-0123456789abcdef")  # type: ignore[assignment]
    mine = await daemon.client(api_key="key-a-0123456789abcdef").responses.create(model="sonnet", input="mine")
    for key, previous in (("key-a-0123456789abcdef", "resp_nonexistent"), ("key-b-0123456789abcdef", mine.id)):
        with pytest.raises(openai.BadRequestError) as caught:
            await daemon.client(api_key=key).responses.create(model="sonnet", input="x", previous_response_id=previous)
        assert caught.value.code == "previous_response_not_found" and caught.value.param == "previous_response_id"


async def test_the_sdk_function_tool_loop_goes_on_with_the_same_claude_turn(
    daemon: Daemon, mock_api: MockAnthropic
) -> None:
    client = daemon.client()
    first = await client.responses.create(
        model="sonnet",
        input='CALL_CLIENT get_weather {"city": "Oslo"}',
        tools=[WEATHER],  # type: ignore[list-item]
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    asked = len(mock_api.requests)
    second = await client.responses.create(
        model="sonnet", previous_response_id=first.id, tools=[WEATHER],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
    )  # fmt: skip
    assert second.output_text == "Tool said: sunny, 21 C"
    assert len(mock_api.requests) == asked + 1, "the waiting turn went on"


async def test_a_full_input_resend_without_an_id_is_recognised(daemon: Daemon, mock_api: MockAnthropic) -> None:
    """As Codex sends it: store false, the whole input every time, tool calls and outputs included."""
    client = daemon.client()
    items: list[Any] = [{"type": "message", "role": "developer", "content": "You are a coding agent."},
                        {"type": "message", "role": "user", "content": [{"type": "input_text",
                         "text": 'CALL_CLIENT get_weather {"city": "Bern"}'}]}]  # fmt: skip
    first = await client.responses.create(model="sonnet", input=items, tools=[WEATHER], store=False)  # type: ignore[list-item]
    items += [item.model_dump(exclude_none=True) for item in first.output]
    call = next(item for item in first.output if item.type == "function_call")
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "cold"})  # type: ignore[union-attr]
    second = await client.responses.create(model="sonnet", input=items, tools=[WEATHER], store=False)  # type: ignore[list-item]
    assert second.output_text == "Tool said: cold"
    items += [item.model_dump(exclude_none=True) for item in second.output]
    items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "and tomorrow"}]})
    third = await client.responses.create(model="sonnet", input=items, tools=[WEATHER], store=False)  # type: ignore[list-item]
    assert third.output_text == "MOCK reply to: and tomorrow"
    dialogue = mock_api.dialogue(turn_request(mock_api, "and tomorrow"))
    assert not any("<conversation_history>" in text for _, text in dialogue), "the same session, resumed"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="sonnet", input="x", previous_response_id=first.id)
    assert caught.value.code == "previous_response_not_found", "store: false kept nothing"


class Weather(BaseModel):
    city: str
    temp: int


async def test_structured_output_through_text_format(daemon: Daemon) -> None:
    parsed = await daemon.client().responses.parse(
        model="sonnet", input='STRUCTURED {"city": "Paris", "temp": 21}', text_format=Weather
    )
    assert parsed.output_parsed == Weather(city="Paris", temp=21)


async def test_reasoning_effort_reaches_the_api(daemon: Daemon, mock_api: MockAnthropic) -> None:
    await daemon.client().responses.create(model="sonnet", input="think hard", reasoning={"effort": "high"})
    assert mock_api.requests[turn_request(mock_api, "think hard")]["output_config"]["effort"] == "high"


async def reasoning_of(daemon: Daemon, text: str) -> tuple[str, Any]:
    stream = await daemon.client().responses.create(model="sonnet", input=text, stream=True)
    events = [event async for event in stream]
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")  # type: ignore[union-attr]
    return summary, events[-1].response  # type: ignore[union-attr]


async def test_thinking_and_tool_progress_are_reasoning_items(daemon: Daemon) -> None:
    summary, final = await reasoning_of(daemon, "THINK first")
    assert summary == "Let me think about this mock."
    assert [item.type for item in final.output] == ["reasoning", "message"]
    summary, final = await reasoning_of(daemon, "USE_TOOL please")
    assert "Bash: echo hi" in summary, "Claude Code's own tool, as progress"
    assert final.output_text == "I will run a command.\n\nTool said: hi", "progress never mixes into the answer"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": [{"type": "mystery"}]}, "input.0.type"),
        ({"input": [{"type": "message", "role": "user", "content": [{"type": "input_audio"}]}]},
         "input.0.content.0.type"),
        ({"input": [{"type": "message", "role": "critic", "content": "x"}]}, "input.0.role"),
        ({"input": [{"type": "function_call_output", "call_id": "call_unknown", "output": "x"}]}, "input"),
        ({"input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools.0.type"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}}},
         "text.format.schema"),
        ({"input": "hi", "reasoning": {"effort": "galactic"}}, "reasoning.effort"),
    ],
)  # fmt: skip
async def test_bad_requests_are_400_naming_the_field(
    daemon: Daemon, mock_api: MockAnthropic, body: dict[str, Any], param: str
) -> None:
    answer = await post_sse(f"{daemon.url}/v1/responses", {"model": "sonnet", **body})
    assert answer.status == 400, answer.data
    error = json.loads(answer.data[0])["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert not mock_api.requests, "no CLI ran"


async def test_what_codex_sends_on_every_request_is_accepted(daemon: Daemon) -> None:
    response = await daemon.client().responses.create(
        model="sonnet", input="hello codex", store=False, stream=False, tool_choice="auto", parallel_tool_calls=True,
        include=["reasoning.encrypted_content"], prompt_cache_key="session-1", reasoning={"summary": "auto"},
        tools=[WEATHER, {"type": "web_search", "external_web_access": False},  # type: ignore[list-item]
               {"type": "namespace", "name": "agents", "description": "sub-agents", "tools": [WEATHER]}],
        extra_body={"client_metadata": {"turn_id": "t1"}},
    )  # fmt: skip
    assert response.output_text == "MOCK reply to: hello codex"


async def test_each_dialect_is_counted_apart(daemon: Daemon) -> None:
    await daemon.client().responses.create(model="sonnet", input="counted")
    await daemon.anthropic().messages.create(model="sonnet", max_tokens=9, messages=[{"role": "user", "content": "x"}])
    await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "y"}])
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/metrics") as response:
        metrics = await response.text()
    for dialect in ("responses", "messages", "chat"):
        assert f'claude_max_turns_total{{dialect="{dialect}",face="http",outcome="ok"}} 1.0' in metrics, metrics
