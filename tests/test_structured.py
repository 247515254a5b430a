"""Structured outputs and the answer's form over chat completions, on the real CLI, with the official `openai` SDK.

The CLI enforces the schema (`--json-schema`): the mock's ``STRUCTURED {json}`` hands Claude's answer to the
CLI's StructuredOutput tool, and the CLI checks it against the schema before the turn ends.
"""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import Daemon
from tests.mock_anthropic import MockAnthropic
from tests.sse import post_sse


class Weather(BaseModel):
    city: str
    temp: int


ASK_WEATHER = 'STRUCTURED {"city": "Paris", "temp": 21}'


async def test_parse_gives_the_pydantic_object(daemon: Daemon, mock_api: MockAnthropic) -> None:
    completion = await daemon.client().chat.completions.parse(
        model="sonnet", messages=[{"role": "user", "content": ASK_WEATHER}], response_format=Weather
    )
    message = completion.choices[0].message
    assert message.parsed == Weather(city="Paris", temp=21)
    assert json.loads(message.content or "") == {"city": "Paris", "temp": 21}
    offered = {tool["name"]: tool for tool in mock_api.requests[-1]["tools"]}
    assert offered["StructuredOutput"]["input_schema"]["required"] == ["city", "temp"], "the schema reached the CLI"


async def test_an_answer_that_breaks_the_schema_never_reaches_the_client(daemon: Daemon) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await daemon.client().chat.completions.parse(
            model="sonnet", messages=[{"role": "user", "content": 'STRUCTURED {"city": 5}'}], response_format=Weather
        )
    assert caught.value.status_code == 502
    assert "without the structured answer" in caught.value.message


async def test_json_object_is_a_json_object(daemon: Daemon) -> None:
    completion = await daemon.client().chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": 'STRUCTURED {"anything": [1, 2]}'}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"anything": [1, 2]}


async def test_a_streamed_structured_answer_is_only_the_json(daemon: Daemon) -> None:
    answer = await post_sse(
        f"{daemon.url}/v1/chat/completions",
        {
            "model": "sonnet",
            "stream": True,
            "messages": [{"role": "user", "content": ASK_WEATHER}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": Weather.model_json_schema()},
            },
        },
    )
    assert json.loads(answer.text) == {"city": "Paris", "temp": 21}
    assert answer.finish_reasons == ["stop"] and answer.data[-1] == "[DONE]"


async def test_the_schema_belongs_to_its_turn_and_not_the_warm_process(daemon: Daemon) -> None:
    client = daemon.client()
    messages: list[dict[str, str]] = [{"role": "user", "content": ASK_WEATHER}]
    first = await client.chat.completions.parse(model="sonnet", messages=messages, response_format=Weather)  # type: ignore[arg-type]
    messages += [{"role": "assistant", "content": first.choices[0].message.content or ""},
                 {"role": "user", "content": "now in prose"}]  # fmt: skip
    second = await client.chat.completions.create(model="sonnet", messages=messages)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "MOCK reply to: now in prose"


async def test_reasoning_effort_reaches_the_api_as_the_clis_effort(daemon: Daemon, mock_api: MockAnthropic) -> None:
    await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "think hard"}], reasoning_effort="high"
    )
    assert mock_api.requests[-1]["output_config"]["effort"] == "high"
    await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "think less"}], reasoning_effort="minimal"
    )
    assert mock_api.requests[-1]["output_config"]["effort"] == "low"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
        ({"reasoning_effort": "enormous"}, "reasoning_effort"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strng"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": "json"}, "response_format"),
    ],
)  # fmt: skip
async def test_what_cannot_be_honoured_is_refused_by_name(
    daemon: Daemon, mock_api: MockAnthropic, extra: dict[str, object], param: str
) -> None:
    asked = len(mock_api.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        await daemon.client().chat.completions.create(
            model="sonnet",
            messages=[{"role": "user", "content": "hi"}],
            **extra,  # type: ignore[arg-type]
        )
    assert caught.value.param == param, caught.value.message
    assert len(mock_api.requests) == asked, "no CLI ran"


async def test_one_model_is_retrieved_and_an_unknown_one_is_404(daemon: Daemon) -> None:
    client = daemon.client()
    assert (await client.models.retrieve("claude-sonnet-4")).id == "claude-sonnet-4"
    assert (await client.models.retrieve("maxproxy/opus")).id == "maxproxy/opus"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-5")
    assert caught.value.code == "model_not_found"
