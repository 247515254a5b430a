"""The OpenAI-compatible API on the real Claude Code CLI, driven by the official `openai` SDK."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import aiohttp
import openai
import pytest

from tests.conftest import Daemon
from tests.mock_anthropic import CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, INPUT_TOKENS, REROUTED_MODEL, MockAnthropic
from tests.sse import post_sse


async def test_health_and_models(daemon: Daemon) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/health") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"
    models = await daemon.client().models.list()
    ids = [m.id for m in models.data]
    assert {"claude-opus-4", "claude-sonnet-4", "claude-haiku-4", "opus", "sonnet", "haiku"} <= set(ids)


async def test_non_streaming_answer_with_usage(daemon: Daemon, mock_api: MockAnthropic) -> None:
    completion = await daemon.client().chat.completions.create(
        model="claude-sonnet-4", messages=[{"role": "user", "content": "hello there"}]
    )
    assert completion.choices[0].message.content == "MOCK reply to: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.tool_calls is None
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == CACHE_READ_TOKENS
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert len(mock_api.requests) == 1


async def test_streaming_with_the_sdk(daemon: Daemon) -> None:
    stream = await daemon.client().chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": "stream me SLOW"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    texts, finishes, usages = [], [], []
    async for chunk in stream:
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            if choice.delta.content:
                texts.append(choice.delta.content)
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert "".join(texts) == "MOCK reply to: stream me SLOW"
    assert len(texts) > 3, "text arrives as many deltas, not one block"
    assert finishes == ["stop"]
    assert len(usages) == 1
    assert usages[0].prompt_tokens == INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS


async def test_stream_wire_format(daemon: Daemon) -> None:
    answer = await post_sse(
        f"{daemon.url}/v1/chat/completions",
        {"model": "sonnet", "stream": True, "stream_options": {"include_usage": True},
         "messages": [{"role": "user", "content": "wire check"}]},
    )  # fmt: skip
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    first = answer.chunks[0]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": ""}
    assert answer.data.count("[DONE]") == 1 and answer.data[-1] == "[DONE]"
    assert answer.finish_reasons == ["stop"]
    usage_chunks = [c for c in answer.chunks if c["choices"] == []]
    assert len(usage_chunks) == 1 and answer.chunks[-1] == usage_chunks[0]
    assert answer.text == "MOCK reply to: wire check"
    assert len({c["id"] for c in answer.chunks}) == 1


async def test_stream_without_include_usage_has_no_usage_chunk(daemon: Daemon) -> None:
    answer = await post_sse(
        f"{daemon.url}/v1/chat/completions",
        {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "no usage"}]},
    )
    assert [c for c in answer.chunks if c["choices"] == []] == []
    assert answer.finish_reasons == ["stop"]


@pytest.mark.parametrize(
    ("requested", "family"),
    [
        ("claude-sonnet-4", "sonnet"),
        ("claude-opus-4", "opus"),
        ("maxproxy/claude-haiku-4", "haiku"),
        ("claude-code-cli/sonnet", "sonnet"),
    ],
)
async def test_model_mapping(daemon: Daemon, mock_api: MockAnthropic, requested: str, family: str) -> None:
    completion = await daemon.client().chat.completions.create(
        model=requested, messages=[{"role": "user", "content": "which model"}]
    )
    sent = mock_api.requests[-1]["model"]
    assert family in sent
    assert completion.model == requested, "the family asked for answered: the id asked for, not a reroute"


async def test_an_answer_from_another_family_says_which(daemon: Daemon, mock_api: MockAnthropic) -> None:
    completion = await daemon.client().chat.completions.create(
        model="claude-sonnet-4", messages=[{"role": "user", "content": "REROUTED please"}]
    )
    assert completion.model == REROUTED_MODEL
    async with aiohttp.ClientSession() as session:  # the SDK insists on a model; the API does not
        body = {"messages": [{"role": "user", "content": "no model named"}]}
        async with session.post(f"{daemon.url}/v1/chat/completions", json=body) as response:
            plain = await response.json()
    assert plain["model"] == mock_api.requests[-1]["model"], "no model asked for: the one that answered"


async def test_dated_model_id_passes_through(daemon: Daemon, mock_api: MockAnthropic) -> None:
    await daemon.client().chat.completions.create(
        model="claude-sonnet-4-20250514", messages=[{"role": "user", "content": "dated"}]
    )
    assert mock_api.requests[-1]["model"] == "claude-sonnet-4-20250514"


async def test_claude_code_tools_stay_internal(daemon: Daemon, mock_api: MockAnthropic) -> None:
    completion = await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "USE_TOOL please"}]
    )
    choice = completion.choices[0]
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert choice.message.content == "I will run a command.\n\nTool said: hi"
    # The CLI really ran the tool: the second API call carried its result.
    assert len(mock_api.requests) == 2


async def test_streamed_tool_run_keeps_blocks_apart(daemon: Daemon) -> None:
    answer = await post_sse(
        f"{daemon.url}/v1/chat/completions",
        {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "USE_TOOL now"}]},
    )
    assert answer.text == "I will run a command.\n\nTool said: hi"
    assert answer.finish_reasons == ["stop"]
    assert all("tool_calls" not in c["choices"][0]["delta"] for c in answer.chunks if c["choices"])


async def test_thinking_is_not_part_of_the_answer(daemon: Daemon) -> None:
    completion = await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "THINK first"}]
    )
    assert completion.choices[0].message.content == "MOCK reply to: THINK first"


async def test_system_text_travels_in_the_user_turn(daemon: Daemon, mock_api: MockAnthropic) -> None:
    await daemon.client().chat.completions.create(
        model="sonnet",
        messages=[
            {"role": "system", "content": "You are PirateBot. Speak like a pirate."},
            {"role": "developer", "content": "Keep answers short."},
            {"role": "user", "content": [{"type": "text", "text": "ahoy"}]},
        ],
    )
    body = mock_api.requests[-1]
    system_text = str(body.get("system"))
    assert "PirateBot" not in system_text, "client system text must not replace or extend Claude Code's own"
    user_texts = mock_api.user_texts()
    instructions = [t for t in user_texts if "<instructions>" in t]
    assert len(instructions) == 1
    assert "You are PirateBot" in instructions[0] and "Keep answers short." in instructions[0]
    assert user_texts[-1] == "ahoy"


async def test_tool_and_assistant_messages_are_accepted(daemon: Daemon, mock_api: MockAnthropic) -> None:
    completion = await daemon.client().chat.completions.create(
        model="sonnet",
        messages=[
            {"role": "user", "content": "look up the weather"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rainy, 4 C"},
        ],
    )  # fmt: skip
    assert completion.choices[0].finish_reason == "stop"
    sent = "\n".join(mock_api.user_texts())
    assert "weather" in sent and '{"city": "Oslo"}' in sent and "rainy, 4 C" in sent


async def test_prompt_starting_with_dashes_is_a_prompt(daemon: Daemon, mock_api: MockAnthropic) -> None:
    completion = await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "--help --version -p"}]
    )
    assert completion.choices[0].message.content == "MOCK reply to: --help --version -p"
    assert mock_api.user_texts()[-1] == "--help --version -p"


async def test_large_prompt_arrives_whole(daemon: Daemon, mock_api: MockAnthropic) -> None:
    big = "x" * (300 * 1024) + " END"
    completion = await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": big}]
    )
    assert completion.choices[0].message.content.endswith("END")
    assert mock_api.user_texts()[-1] == big


async def test_image_reaches_the_model_as_an_image_block(daemon: Daemon, mock_api: MockAnthropic) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    await daemon.client().chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        ]}],
    )  # fmt: skip
    last_user = [m for m in mock_api.requests[-1]["messages"] if m["role"] == "user"][-1]
    images = [b for b in last_user["content"] if b.get("type") == "image"]
    assert images and images[0]["source"]["data"] == png


async def test_openai_sdk_error_classes(daemon: Daemon) -> None:
    client = daemon.client()
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize("stream", [False, True])
async def test_answer_cut_by_the_output_limit_finishes_with_length(daemon: Daemon, stream: bool) -> None:
    # The mock stops every attempt with max_tokens; the CLI continues a few times, then gives up.
    if stream:
        answer = await post_sse(
            f"{daemon.url}/v1/chat/completions",
            {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "MAXTOK"}]},
        )
        assert answer.finish_reasons == ["length"] and answer.errors == []
        text = answer.text
    else:
        completion = await daemon.client().chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "MAXTOK"}]
        )
        assert completion.choices[0].finish_reason == "length"
        text = completion.choices[0].message.content or ""
    assert text.startswith("MOCK reply to: MAXTOK")


async def test_usage_ledger_counts_each_turn_once(daemon: Daemon) -> None:
    client = daemon.client()
    headers = {"X-Conversation-Id": "ledger"}
    for text in ("one", "two", "three"):
        await client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": text}], extra_headers=headers
        )
    store = daemon.engine.store
    for _ in range(100):  # each turn's ledger row is written once its CLI has exited
        usage = await store.usage("http:open:ledger")
        if usage.turns == 3:
            break
        await asyncio.sleep(0.05)
    assert usage.turns == 3
    assert usage.prompt_tokens == 3 * (INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS)
    costs = [row[0] for row in await (await store.db.execute("SELECT cost_usd FROM turns ORDER BY id")).fetchall()]
    assert costs[0] > 0 and costs[0] == pytest.approx(costs[1]) == pytest.approx(costs[2]), (
        "a resumed session's running total is not the turn's cost"
    )


async def test_metrics_tell_what_ran(start_daemon: Callable[..., object]) -> None:
    daemon: Daemon = await start_daemon(proxy_api_keys="sk-metrics-0123456789")  # type: ignore[assignment]
    client = daemon.client("sk-metrics-0123456789")
    await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "count me"}])
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "ERR429"}])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{daemon.url}/metrics") as response:
            assert response.status == 401, "protected like /v1 when keys are set"
        for _ in range(100):  # turn metrics are taken when the turn has ended, just after the answer
            async with session.get(
                f"{daemon.url}/metrics", headers={"Authorization": "Bearer sk-metrics-0123456789"}
            ) as r:
                text = await r.text()
            if 'claude_max_turns_total{dialect="chat",face="http",outcome="upstream_error"} 1.0' in text:
                break
            await asyncio.sleep(0.05)
    assert 'claude_max_turns_total{dialect="chat",face="http",outcome="ok"} 1.0' in text
    assert 'claude_max_turns_total{dialect="chat",face="http",outcome="upstream_error"} 1.0' in text
    assert 'claude_max_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'claude_max_requests_total{route="/v1/chat/completions",status="429"} 1.0' in text
    model = next(
        line.split('model="')[1].split('"')[0] for line in text.splitlines() if "claude_max_tokens_total{" in line
    )
    prompt = INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS
    assert f'claude_max_tokens_total{{kind="prompt",model="{model}"}} {float(prompt)}' in text
    assert 'claude_max_time_to_first_token_seconds_count{dialect="chat",face="http"} 1.0' in text
    assert "claude_max_turns_running 0.0" in text and "claude_max_warm_processes 1.0" in text
    assert "claude_max_cost_usd_total" in text


async def test_progress_modes(start_daemon: Callable[..., object]) -> None:
    body = {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "USE_TOOL and THINK"}]}
    quiet: Daemon = await start_daemon(proxy_progress="off")  # type: ignore[assignment]
    answer = await post_sse(f"{quiet.url}/v1/chat/completions", body)
    assert all("reasoning_content" not in c["choices"][0]["delta"] for c in answer.chunks if c["choices"])
    await quiet.engine.close()
    chatty: Daemon = await start_daemon()  # type: ignore[assignment]
    answer = await post_sse(f"{chatty.url}/v1/chat/completions", body)
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in answer.chunks if c["choices"])
    assert "💻 Bash: echo hi" in reasoning
    assert answer.text == "I will run a command.\n\nTool said: hi", "progress never mixes into the content"
    thinking = await post_sse(
        f"{chatty.url}/v1/chat/completions",
        {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "THINK hard"}]},
    )
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in thinking.chunks if c["choices"])
    assert reasoning == "Let me think about this mock."


async def test_an_upstream_429_passes_its_own_retry_after_through(
    start_daemon: Callable[..., object], mock_api: MockAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "1")  # the CLI retries once, waiting what the API asked
    mock_api.retry_after = 2
    daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    with pytest.raises(openai.RateLimitError) as caught:
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "ERR429"}])
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "upstream_rate_limited"


async def test_an_upstream_429_without_a_known_wait_names_none(daemon: Daemon, mock_api: MockAnthropic) -> None:
    """With no retry by the CLI (CLAUDE_CODE_MAX_RETRIES=0 here) the daemon does not know the API's wait, and does
    not invent one: the client backs off as it would."""
    with pytest.raises(openai.RateLimitError) as caught:
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "ERR429"}])
    assert "retry-after" not in caught.value.response.headers


async def test_a_store_that_fails_mid_answer_ends_it_cleanly(
    daemon: Daemon, mock_api: MockAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken store (a full disk) after the model answered: the stream ends with an error event and [DONE], a
    whole answer is a 500 in OpenAI's shape; the daemon goes on serving."""

    async def disk_full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(daemon.engine.store, "record", disk_full)
    body = {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "stream this"}]}
    answer = await post_sse(f"{daemon.url}/v1/chat/completions", body)
    assert answer.text == "MOCK reply to: stream this", "what the model said reached the client"
    assert [e["code"] for e in answer.errors] == ["internal_error"] and "disk is full" in answer.errors[0]["message"]
    assert answer.data[-1] == "[DONE]" and answer.data.count("[DONE]") == 1
    with pytest.raises(openai.InternalServerError) as caught:
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "whole"}])
    assert caught.value.code == "internal_error"
    monkeypatch.setattr(daemon.engine.store, "record", type(daemon.engine.store).record.__get__(daemon.engine.store))
    again = await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "ok?"}])
    assert again.choices[0].message.content == "MOCK reply to: ok?"
