"""Each face driven through the engine's public API by a scripted engine: what its users see."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from claude_max.daemon import compose
from core import (
    AnswerDelta,
    ClientToolCall,
    ClientToolsPending,
    CLIUnavailable,
    Finished,
    Reasoning,
    Saturated,
    Settings,
    StoreError,
    ToolActivity,
    UpstreamError,
    Usage,
)
from tests.fake_telegram import TOKEN, FakeTelegram
from tests.fast.fake_engine import HANG, FakeEngine, Pause, Refuse, Step
from tests.sse import post_sse

USER = 111


def done(text: str, *, truncated: bool = False, usage: Usage | None = None) -> Finished:
    return Finished(text, usage or Usage(input_tokens=5, output_tokens=2), 0.0123, "claude-fake-1", truncated)


class Face:
    def __init__(self, url: str, engine: FakeEngine) -> None:
        self.url = url
        self.engine = engine
        self.client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-anything", max_retries=0)


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []
    faces: list[Face] = []

    async def run(scripts: list[list[Step]], **overrides: object) -> Face:
        values: dict[str, object] = {"state_dir": tmp_path / "state", "proxy_port": 0, "claude_bin": "claude"}
        values.update(overrides)
        settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
        built: list[FakeEngine] = []
        runner = web.AppRunner(compose(settings, engine=FakeEngine.factory(scripts, built)), handler_cancellation=True)  # type: ignore[arg-type]
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        face = Face(f"http://127.0.0.1:{port}", built[0])
        faces.append(face)
        return face

    yield run
    for face in faces:
        await face.client.close()
    for runner in runners:
        await runner.cleanup()


def ask(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": text}], **extra}


# -- HTTP ------------------------------------------------------------------------------------------


async def test_http_streams_the_answer_and_reports_a_cut_one_as_length(start: Callable[..., Any]) -> None:
    face: Face = await start([[AnswerDelta("Hel"), AnswerDelta("lo"), done("Hello", truncated=True)]] * 2)
    chunks = [c async for c in await face.client.chat.completions.create(
        **ask(), stream=True, stream_options={"include_usage": True})]  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage is not None and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        5,
        2,
    )
    assert {c.model for c in chunks} == {"claude-sonnet-4"}, "the model the client asked for, from the turn's label"
    whole = await face.client.chat.completions.create(**ask("again"))
    assert whole.choices[0].message.content == "Hello" and whole.choices[0].finish_reason == "length"
    assert face.engine.requests[0].model_asked == "claude-sonnet-4"


async def test_http_shows_tools_and_thinking_as_reasoning(start: Callable[..., Any]) -> None:
    script = [ToolActivity("Bash", "💻 Bash: ls"), Reasoning("pondering"), AnswerDelta("Done."), done("Done.")]
    face: Face = await start([script], proxy_progress="reasoning")
    answer = await post_sse(f"{face.url}/v1/chat/completions", ask(stream=True))
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in answer.chunks if c["choices"])
    assert "💻 Bash: ls" in reasoning and "pondering" in reasoning
    assert answer.text == "Done." and answer.data[-1] == "[DONE]"


async def test_http_progress_as_text_is_part_of_the_answer(start: Callable[..., Any]) -> None:
    face: Face = await start(
        [[ToolActivity("Read", "📖 Read: a.py"), AnswerDelta("ok"), done("ok")]], proxy_progress="text"
    )
    answer = await post_sse(f"{face.url}/v1/chat/completions", ask(stream=True))
    assert answer.text == "> 📖 Read: a.py\n\nok"


@pytest.mark.parametrize(
    ("failure", "code"),
    [(UpstreamError("overloaded", status=529), "upstream_error"), (StoreError("disk full"), "internal_error")],
)
async def test_a_failure_after_the_stream_started_is_an_error_event_then_done(
    start: Callable[..., Any], failure: Exception, code: str
) -> None:
    face: Face = await start([[AnswerDelta("partial"), failure]])
    answer = await post_sse(f"{face.url}/v1/chat/completions", ask(stream=True))
    assert answer.status == 200 and answer.text == "partial"
    assert [e["code"] for e in answer.errors] == [code]
    assert answer.data[-1] == "[DONE]"


async def test_a_failure_before_any_output_has_its_status(start: Callable[..., Any]) -> None:
    face: Face = await start([
        [Refuse(Saturated("all 1 Claude Code slots are busy", retry_after=7))],
        [Refuse(CLIUnavailable("the Claude Code CLI was not found"))],
    ])  # fmt: skip
    with pytest.raises(openai.RateLimitError) as busy:
        await face.client.chat.completions.create(**ask())
    assert busy.value.response.headers["Retry-After"] == "7"
    with pytest.raises(openai.APIStatusError) as missing:
        await face.client.chat.completions.create(**ask(stream=True))
    assert missing.value.status_code == 503 and "not found" in missing.value.message


async def test_client_tool_calls_go_out_and_their_results_continue_the_same_turn(start: Callable[..., Any]) -> None:
    call = ClientToolCall("call_1", "get_weather", json.dumps({"city": "Paris"}))
    script = [
        call,
        ClientToolsPending((call,), Usage(input_tokens=3, output_tokens=1)),
        AnswerDelta("Sunny."),
        done("Sunny."),
    ]
    face: Face = await start([script])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather?"}]
    first = await face.client.chat.completions.create(model="claude-sonnet-4", messages=messages, tools=tools)  # type: ignore[arg-type]
    assert first.choices[0].finish_reason == "tool_calls"
    (sent,) = first.choices[0].message.tool_calls or []
    assert (sent.id, sent.function.name, json.loads(sent.function.arguments)) == (
        "call_1",
        "get_weather",
        {"city": "Paris"},
    )
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    second = await face.client.chat.completions.create(model="claude-sonnet-4", messages=messages, tools=tools)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "Sunny."
    (turn,) = face.engine.started
    assert turn.results == [{"call_1": ("18C", False)}], "the same turn got the client's result"
    assert first.usage is not None and first.usage.prompt_tokens == 3 and second.usage is not None


# -- HTTP, Anthropic's dialect ------------------------------------------------------------------------


def wire_events(wire: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: ") :]) for line in wire.splitlines() if line.startswith("data: ")]


async def post_messages(face: Face, body: dict[str, Any]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(f"{face.url}/v1/messages", json=body) as response:
        return response.status, (await response.read()).decode()


async def test_messages_stream_blocks_by_kind_with_progress_as_thinking(start: Callable[..., Any]) -> None:
    script = [Reasoning("pondering"), ToolActivity("Bash", "💻 Bash: ls"), AnswerDelta("Do"), AnswerDelta("ne."),
              done("Done.")]  # fmt: skip
    face: Face = await start([script, script], proxy_progress="reasoning")
    body = {**ask(), "max_tokens": 99, "stream": True, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    status, wire = await post_messages(face, body)
    events = wire_events(wire)
    assert status == 200 and events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text"], "thinking and progress in one thinking block, then the answer"
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert "".join(d.get("thinking", "") for d in deltas) == "pondering💻 Bash: ls\n"
    assert "".join(d.get("text", "") for d in deltas) == "Done."
    (stop,) = [e for e in events if e["type"] == "message_delta"]
    assert stop["delta"]["stop_reason"] == "end_turn" and stop["usage"]["output_tokens"] == 2
    # Without thinking asked for, neither thinking nor progress shows: a ping marks the tool.
    status, wire = await post_messages(face, {**ask("again"), "stream": True})
    assert [e["content_block"]["type"] for e in wire_events(wire) if e["type"] == "content_block_start"] == ["text"]
    assert wire.count("event: ping") == 2, "one at the start, one for the tool"


async def test_messages_failures_in_anthropics_shape_before_and_after_the_first_byte(
    start: Callable[..., Any],
) -> None:
    face: Face = await start([
        [Refuse(Saturated("all 1 Claude Code slots are busy", retry_after=7))],
        [AnswerDelta("partial"), StoreError("disk full")],
    ])  # fmt: skip
    async with aiohttp.ClientSession() as http, http.post(f"{face.url}/v1/messages", json=ask()) as response:
        assert response.status == 429 and response.headers["Retry-After"] == "7"
        assert (await response.json())["error"]["type"] == "rate_limit_error"
    status, wire = await post_messages(face, {**ask(), "stream": True})
    events = wire_events(wire)
    assert status == 200 and events[-1]["type"] == "error" and events[-1]["error"]["type"] == "api_error"
    assert "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta") == "partial"


async def test_messages_client_tool_calls_are_tool_use_blocks(start: Callable[..., Any]) -> None:
    call = ClientToolCall("toolu_1", "get_weather", '{"city": "Oslo"}')
    face: Face = await start([[AnswerDelta("Let me look."), call, ClientToolsPending((call,), Usage(output_tokens=1))]])
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    async with aiohttp.ClientSession() as http, http.post(
        f"{face.url}/v1/messages", json={**ask(), "tools": [tool]}
    ) as response:  # fmt: skip
        message = await response.json()
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [{"type": "text", "text": "Let me look."},
                                  {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                   "input": {"city": "Oslo"}}]  # fmt: skip


# -- HTTP, the Responses API ------------------------------------------------------------------------


async def post_responses(face: Face, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    async with aiohttp.ClientSession() as http, http.post(f"{face.url}/v1/responses", json=body) as response:
        raw = (await response.read()).decode()
        if not body.get("stream"):
            return response.status, [json.loads(raw)]
        return response.status, wire_events(raw)


async def test_responses_stream_items_by_kind_and_numbers_every_event(start: Callable[..., Any]) -> None:
    script = [Reasoning("pondering"), ToolActivity("Bash", "💻 Bash: ls"), AnswerDelta("Do"), AnswerDelta("ne."),
              done("Done.")]  # fmt: skip
    face: Face = await start([script], proxy_progress="reasoning")
    status, events = await post_responses(face, {"model": "sonnet", "input": "hi", "stream": True})
    assert status == 200 and [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["reasoning", "message"], "thinking and progress in one reasoning item, then the answer"
    final = events[-1]
    assert final["type"] == "response.completed" and final["response"]["status"] == "completed"
    output = final["response"]["output"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "pondering💻 Bash: ls\n"}]
    assert output[1]["content"][0]["text"] == "Done." and final["response"]["usage"]["output_tokens"] == 2


async def test_responses_custom_tool_calls_carry_their_input(start: Callable[..., Any]) -> None:
    call = ClientToolCall("call_1", "apply_patch", json.dumps({"input": "*** Begin Patch"}))
    face: Face = await start([[call, ClientToolsPending((call,), Usage(output_tokens=1))]])
    tool = {"type": "custom", "name": "apply_patch", "description": "Edit files",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}  # fmt: skip
    status, (response,) = await post_responses(face, {"model": "sonnet", "input": "patch it", "tools": [tool]})
    assert status == 200
    (item,) = response["output"]
    assert (item["type"], item["call_id"], item["input"]) == ("custom_tool_call", "call_1", "*** Begin Patch")
    (offered,) = face.engine.requests[0].tools
    assert offered.schema["required"] == ["input"] and "start: /.+/" in offered.description


async def test_responses_a_failure_midway_is_response_failed(start: Callable[..., Any]) -> None:
    face: Face = await start([[AnswerDelta("partial"), UpstreamError("overloaded", status=529)]])
    status, events = await post_responses(face, {"model": "sonnet", "input": "hi", "stream": True})
    assert status == 200 and events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "upstream_error"
    assert next(e for e in events if e["type"] == "response.output_text.delta")["delta"] == "partial"


async def test_a_cut_answer_says_so_in_each_dialect(start: Callable[..., Any]) -> None:
    cut = [AnswerDelta("Hel"), done("Hel", truncated=True)]
    face: Face = await start([cut] * 4)
    _, (response,) = await post_responses(face, {"model": "sonnet", "input": "hi"})
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    _, events = await post_responses(face, {"model": "sonnet", "input": "hi", "stream": True})
    assert events[-1]["type"] == "response.incomplete"
    status, wire = await post_messages(face, {**ask(), "max_tokens": 5})
    assert status == 200 and json.loads(wire)["stop_reason"] == "max_tokens"
    _, wire = await post_messages(face, {**ask(), "max_tokens": 5, "stream": True})
    (stop,) = [e for e in wire_events(wire) if e["type"] == "message_delta"]
    assert stop["delta"]["stop_reason"] == "max_tokens"


async def test_responses_offer_claude_only_the_clients_own_tools(start: Callable[..., Any]) -> None:
    face: Face = await start([[done("ok")]])
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}},
             {"type": "web_search"}, {"type": "namespace", "name": "agents", "tools": []}]  # fmt: skip
    status, _ = await post_responses(face, {"model": "sonnet", "input": "hi", "tools": tools})
    assert status == 200 and [t.name for t in face.engine.requests[0].tools] == ["lookup"]


# -- Telegram --------------------------------------------------------------------------------------


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


def bot_settings(telegram: FakeTelegram) -> dict[str, object]:
    return {"telegram_bot_token": TOKEN, "telegram_api_url": telegram.root, "telegram_allowed_users": str(USER),
            "telegram_edit_interval": 0.5}  # fmt: skip


async def test_the_bot_shows_tools_then_the_answer_and_a_summary(
    telegram: FakeTelegram, start: Callable[..., Any]
) -> None:
    script = [
        ToolActivity("Bash", "💻 Bash: make test"),
        Pause(1.5),  # the status message is edited at most every 0.5 s
        AnswerDelta("All "),
        AnswerDelta("green."),
        done("All green."),
    ]
    await start([script], **bot_settings(telegram))
    telegram.user_sends("run the tests")
    await telegram.wait_for(lambda: any(t.startswith("All green.\n\n✅ Done") for t in telegram.texts_to(USER)))
    # the status message goes once the answer with its summary is below it (so the turn reads top to bottom)
    await telegram.wait_for(lambda: not [t for t in telegram.texts_to(USER) if t.startswith("⏳")])
    (answer,) = telegram.texts_to(USER)  # the status message was deleted, not left as a second summary
    summary = answer.removeprefix("All green.\n\n")
    assert "1 tool (Bash)" in summary and "$0.0123" in summary and summary.endswith("\n💻 Bash: make test")
    edits = [c.params.get("text", "") for c in telegram.calls_of("editMessageText", "sendMessage")]
    assert any("💻 Bash: make test" in text for text in edits), "the tool, as the engine described it"


async def test_a_stop_after_the_answer_came_has_nothing_to_stop(
    telegram: FakeTelegram, start: Callable[..., Any]
) -> None:
    await start([[AnswerDelta("All green."), done("All green.")]], **bot_settings(telegram))
    release = telegram.hold("deleteMessage")  # the turn is answered; its status message is still going
    telegram.user_sends("run the tests")
    await telegram.wait_for(lambda: any(t.startswith("All green.\n\n✅ Done") for t in telegram.texts_to(USER)))
    telegram.user_sends("/stop")
    await telegram.wait_for(lambda: "Nothing is running." in telegram.texts_to(USER))
    release.set()
    await telegram.wait_for(lambda: not [t for t in telegram.texts_to(USER) if t.startswith("⏳")])


@pytest.mark.parametrize(
    ("failure", "told"),
    [
        (UpstreamError("slow down", status=429), "⚠️ Anthropic is rate limiting this account: slow down"),
        (StoreError("database is locked"), "⚠️ The daemon failed: database is locked"),
    ],
)
async def test_the_bot_tells_the_chat_what_failed(
    telegram: FakeTelegram, start: Callable[..., Any], failure: Exception, told: str
) -> None:
    await start([[AnswerDelta("part"), failure]], **bot_settings(telegram))
    telegram.user_sends("hello")
    # What Claude had written stays, and the failure follows it in the same bubble, above the summary.
    await telegram.wait_for(
        lambda: any(t.startswith(f"part\n\n{told}\n\n⚠️ Failed · ") for t in telegram.texts_to(USER))
    )


async def test_the_bot_stop_button_cancels_the_turn(telegram: FakeTelegram, start: Callable[..., Any]) -> None:
    face: Face = await start([[ToolActivity("Bash", "💻 Bash: sleep 100"), HANG]], **bot_settings(telegram))
    telegram.user_sends("wait forever")
    await telegram.wait_for(lambda: any("sleep 100" in m.text for m in telegram.sent_to(USER)))
    status = next(m for m in telegram.sent_to(USER) if m.text.startswith("⏳"))
    telegram.user_presses(status, "stop")
    await telegram.wait_for(lambda: status.text.startswith("⏹ Stopped ·"))  # (nothing was written: no kept text)
    (turn,) = face.engine.started
    assert turn.cancelled is not None and turn.cancelled.name == "STOPPED"
    assert face.engine.requests[0].patient, "a chat's turn waits for a slot as long as it takes"
