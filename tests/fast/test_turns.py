"""What a face receives from a turn, on the engine with recorded CLI output replayed (no node, no CLI)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core import (
    AnswerDelta,
    CancelReason,
    CLIUnavailable,
    Engine,
    Finished,
    NoStructuredAnswer,
    Reasoning,
    Settings,
    ToolActivity,
    Turn,
    TurnCancelled,
    TurnEvent,
    TurnRequest,
    UpstreamError,
)

KEY = "test:fast"


def init(model: str = "claude-replay-1") -> dict[str, Any]:
    return {"type": "system", "subtype": "init", "model": model, "cwd": "/", "permissionMode": "default"}


def delta(text: str, parent: str | None = None, message: str = "m1") -> dict[str, Any]:
    return {
        "type": "stream_event",
        "api_message_id": message,
        "parent_tool_use_id": parent,
        "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    }


def tool_use(name: str, tool_input: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
    block = {"type": "tool_use", "id": f"toolu_{name}", "name": name, "input": tool_input}
    return {"type": "assistant", "parent_tool_use_id": parent,
            "message": {"id": "m2", "model": "claude-replay-1", "content": [block]}}  # fmt: skip


def result(text: str = "", **fields: Any) -> dict[str, Any]:
    return {"type": "result", "subtype": "success", "is_error": False, "result": text, "total_cost_usd": 0.01,
            "usage": {"input_tokens": 7, "output_tokens": 3}, **fields}  # fmt: skip


async def run(engine: Engine, text: str = "hi") -> tuple[list[TurnEvent], Turn]:
    events: list[TurnEvent] = []
    async with engine.turn(TurnRequest(prompt_for=lambda _: text, key=KEY)) as turn:
        async for event in turn:
            events.append(event)
    return events, turn


async def warm_pids(engine: Engine) -> set[int]:
    """The warm processes, once the turn that just left has put its process back (in the background)."""
    async with asyncio.timeout(5):
        while not engine.pool.pids():
            await asyncio.sleep(0.01)
    return engine.pool.pids()


def answer(events: list[TurnEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, AnswerDelta))


def finished(events: list[TurnEvent]) -> Finished:
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1]


async def test_a_streamed_answer_comes_as_deltas_then_a_finished_event(replay: Callable[..., Settings]) -> None:
    async with Engine(replay(["02_partial_messages"])) as engine:
        events, _ = await run(engine)
        record = await engine.store.get(KEY)
    done = finished(events)
    assert len([e for e in events if isinstance(e, AnswerDelta)]) == 10, "one event per text delta"
    assert answer(events) == done.text and done.text.strip()
    assert done.usage.prompt_tokens > 0 and done.usage.output_tokens > 0 and done.cost_usd > 0
    assert done.model.startswith("claude") and not done.truncated
    assert record is not None and record.turns == 1, "a finished turn is recorded"


async def test_tools_come_described_and_text_blocks_stay_apart(replay: Callable[..., Settings]) -> None:
    async with Engine(replay(["02b_partial_messages_tool"])) as engine:
        events, _ = await run(engine)
    (tool,) = [e for e in events if isinstance(e, ToolActivity)]
    assert tool.name == "Bash" and tool.description.endswith("Bash: echo hi")
    before, after = finished(events).text.split("\n\n")
    assert before and after, "narration and the answer after the tool, a blank line between them"


async def test_thinking_is_reasoning_not_answer(replay: Callable[..., Settings]) -> None:
    async with Engine(replay(["02c_partial_messages_thinking"])) as engine:
        events, _ = await run(engine)
    thought = "".join(e.text for e in events if isinstance(e, Reasoning))
    assert thought == "Let me think about this mock."
    assert thought not in finished(events).text


async def test_subagents_are_not_shown(replay: Callable[..., Settings]) -> None:
    turn = [
        init(),
        tool_use("Task", {"description": "look around"}),
        delta("inner words", parent="toolu_Task"),
        tool_use("Grep", {"pattern": "x"}, parent="toolu_Task"),
        delta("The answer."),
        result("The answer."),
    ]
    async with Engine(replay([turn])) as engine:
        events, _ = await run(engine)
    assert [e.name for e in events if isinstance(e, ToolActivity)] == ["Task"]
    assert finished(events).text == "The answer."


async def test_an_answer_that_never_streamed_is_shown(replay: Callable[..., Settings]) -> None:
    # The CLI's non-streaming fallback (whole assistant messages), and a result with text only.
    async with Engine(replay(["10h_midstream_error", [init(), result("only in the result")]])) as engine:
        first, _ = await run(engine)
        second, _ = await run(engine, "again")
    assert answer(first) == finished(first).text and "MIDSTREAM_ERR" in finished(first).text
    assert answer(second) == finished(second).text == "only in the result"


async def test_a_limit_that_cut_the_answer_is_reported(replay: Callable[..., Settings]) -> None:
    async with Engine(
        replay(["06a_max_turns_1_tool", [init(), delta("cut"), result("cut", stop_reason="max_tokens")]])
    ) as engine:
        max_turns, turn = await run(engine)
        max_tokens, _ = await run(engine, "again")
    assert finished(max_turns).truncated and turn.outcome == "error_max_turns"
    assert finished(max_tokens).truncated


async def test_an_upstream_429_carries_the_wait_the_cli_saw(replay: Callable[..., Settings]) -> None:
    async with Engine(replay(["10b_err_429"])) as engine:
        with pytest.raises(UpstreamError) as caught:
            await run(engine)
        record = await engine.store.get(KEY)
    assert caught.value.status == 429 and caught.value.retry_after == 33, "the CLI's last retry delay"
    assert record is None, "a failed turn records no session"


async def test_a_cli_that_is_not_logged_in_is_unavailable(replay: Callable[..., Settings]) -> None:
    async with Engine(replay(["13c_no_key_at_all"])) as engine:
        with pytest.raises(CLIUnavailable, match="not logged in"):
            await run(engine)


async def test_the_next_turn_resumes_on_the_warm_process(replay: Callable[..., Settings]) -> None:
    async with Engine(replay(["02_partial_messages", [init(), delta("second"), result("second")]])) as engine:
        _, first = await run(engine)
        events, second = await run(engine, "more")
    assert (first.source, second.source) == ("cold", "warm")
    assert second.resumed is not None and second.session_id == first.session_id
    assert finished(events).text == "second"


async def test_a_stopped_turn_ends_in_turn_cancelled_and_stays_warm(replay: Callable[..., Settings]) -> None:
    async with Engine(replay(["02_partial_messages", [init(), delta("working"), {"replay": "hang"}]])) as engine:
        await run(engine)
        (pid,) = await warm_pids(engine)
        async with engine.turn(TurnRequest(prompt_for=lambda _: "hi", key=KEY)) as turn:
            with pytest.raises(TurnCancelled) as caught:
                async for event in turn:
                    if isinstance(event, AnswerDelta):
                        asyncio.get_running_loop().create_task(turn.cancel(CancelReason.STOPPED))
        assert caught.value.reason is CancelReason.STOPPED and turn.outcome == "cancelled"
        assert await warm_pids(engine) == {pid}, "the interrupted process is kept for the conversation"


SCHEMA = '{"type":"object"}'


async def structured_run(engine: Engine) -> list[TurnEvent]:
    events: list[TurnEvent] = []
    async with engine.turn(TurnRequest(prompt_for=lambda _: "hi", key=KEY, output_schema=SCHEMA)) as turn:
        async for event in turn:
            events.append(event)
    return events


async def test_a_structured_answer_is_the_json_not_the_prose(replay: Callable[..., Settings]) -> None:
    turn = [init(), delta("Let me fill that in."), tool_use("StructuredOutput", {"a": 1}),
            result('{"a":1}', structured_output={"a": 1, "é": [True]})]  # fmt: skip
    settings = replay([turn])
    async with Engine(settings) as engine:
        events = await structured_run(engine)
    assert answer(events) == finished(events).text == '{"a": 1, "é": [true]}'
    assert not [e for e in events if isinstance(e, ToolActivity)], "the CLI's own hand-over is no tool of Claude's"
    argv = json.loads((Path(str(settings.claude_bin)).parent / "replay.argv").read_text().splitlines()[-1])
    assert argv[argv.index("--json-schema") + 1] == SCHEMA


async def test_a_structured_turn_without_the_object_fails(replay: Callable[..., Settings]) -> None:
    async with Engine(replay([[init(), delta("Just prose."), result("Just prose.")]])) as engine:
        with pytest.raises(NoStructuredAnswer) as caught:
            await structured_run(engine)
        record = await engine.store.get(KEY)
    assert "schema" in caught.value.message and record is None, "a failed turn is not recorded as the answer"
