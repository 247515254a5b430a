"""Parsing stream-json and assembling the answer, on transcripts recorded from the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.answer import AnswerBuilder
from core.events import (
    ApiError,
    ApiRetry,
    AssistantText,
    Event,
    MessageStart,
    NotJSON,
    Result,
    SessionInit,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolResult,
    ToolStart,
    UnknownEvent,
    parse_event,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"


def replay(name: str) -> list[Event]:
    events: list[Event] = []
    for line in (FIXTURES / f"{name}.jsonl").read_bytes().splitlines():
        events += parse_event(line)
    return events


def answer_of(events: list[Event]) -> str:
    builder = AnswerBuilder()
    for event in events:
        builder.feed(event)
    return builder.text


def test_streamed_text_arrives_as_deltas_and_once_in_the_answer() -> None:
    events = replay("02_partial_messages")
    assert isinstance(events[0], SessionInit)
    assert events[0].session_id == "f5a8c074-c803-463c-b592-8baf52352eef"
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 10
    assert "".join(d.text for d in deltas) == "MOCK reply #2 (model=claude-opus-5-5) to: hello SLOW"
    assert answer_of(events) == "MOCK reply #2 (model=claude-opus-5-5) to: hello SLOW"
    assert [e.model for e in events if isinstance(e, MessageStart)] == ["claude-opus-5-5"]
    assert [e.reason for e in events if isinstance(e, StopReason)] == ["end_turn"]


def test_result_carries_usage_cost_and_session() -> None:
    result = replay("02_partial_messages")[-1]
    assert isinstance(result, Result)
    assert (result.subtype, result.is_error, result.stop_reason) == ("success", False, "end_turn")
    assert result.usage.input_tokens == 2716 and result.usage.output_tokens == 20
    assert result.usage.prompt_tokens == 2716  # no cache in this recording
    assert result.cost_usd == pytest.approx(0.011264)
    assert result.session_id == "f5a8c074-c803-463c-b592-8baf52352eef"


def test_tool_turn_gives_tool_events_and_separated_text() -> None:
    events = replay("02b_partial_messages_tool")
    tools = [e for e in events if isinstance(e, ToolStart)]
    assert [(t.name, t.input["command"]) for t in tools] == [("Bash", "echo hi")]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(r.tool_use_id, r.content, r.is_error) for r in results] == [(tools[0].tool_use_id, "hi", False)]
    assert answer_of(events) == "I will run a command.\n\nMOCK saw tool result(s): hi"


def test_thinking_is_its_own_event() -> None:
    events = replay("02c_partial_messages_thinking")
    assert [e.text for e in events if isinstance(e, ThinkingDelta)] == ["Let me think about this mock."]
    assert answer_of(events) == "MOCK reply #5 (model=claude-opus-5-5) to: THINK about it"


def test_answer_without_deltas_comes_from_finished_blocks() -> None:
    # Without partial messages (or after the CLI's non-streaming fallback) only whole blocks arrive.
    events = replay("07l_multi_tool")
    assert not any(isinstance(e, TextDelta) for e in events)
    assert answer_of(events) == "Running two commands.\n\nMOCK saw tool result(s): two; one"
    assert len([e for e in events if isinstance(e, ToolStart)]) == 2


def test_api_error_and_retries() -> None:
    events = replay("10b_err_429")
    retries = [e for e in events if isinstance(e, ApiRetry)]
    assert len(retries) == 10 and retries[0].error_status == 429
    errors = [e for e in events if isinstance(e, ApiError)]
    assert errors[0].status == 429 and "429" in errors[0].message
    result = events[-1]
    assert isinstance(result, Result)
    assert result.is_error and result.api_error_status == 429 and result.terminal_reason == "api_error"
    assert answer_of(events) == "", "an API error is not an answer"


def test_max_turns_and_interrupt_results() -> None:
    result = replay("06a_max_turns_1_tool")[-1]
    assert isinstance(result, Result)
    assert result.subtype == "error_max_turns" and result.errors == ("Reached maximum number of turns (1)",)
    interrupted = [e for e in replay("13d_control_initialize_interrupt") if isinstance(e, Result)]
    assert [r.subtype for r in interrupted] == ["error_during_execution", "success"]


def test_unknown_kinds_are_tolerated() -> None:
    events = replay("13d_control_initialize_interrupt")
    assert any(isinstance(e, UnknownEvent) and e.kind == "control_response" for e in events)
    assert parse_event(b'{"type": "brand_new_kind", "x": 1}') == [
        UnknownEvent("brand_new_kind", {"type": "brand_new_kind", "x": 1})
    ]
    assert isinstance(parse_event('{"type": "system", "subtype": "status"}')[0], UnknownEvent)


@pytest.mark.parametrize("line", [b"Welcome to Claude Code!", b"[1, 2]", b"\xff\xfe", b'{"type": "assistant"'])
def test_non_json_lines_raise_not_json(line: bytes) -> None:
    with pytest.raises(NotJSON):
        parse_event(line)


def test_subagent_text_is_not_part_of_the_answer() -> None:
    main = AssistantText("Main answer.", "m1", 0, "claude-x", None)
    sub = AssistantText("subagent chatter", "m2", 0, "claude-x", "toolu_1")
    sub_delta = TextDelta("more chatter", "m3", 0, "toolu_1")
    assert answer_of([sub, sub_delta, main]) == "Main answer."


def test_blocks_are_separated_once() -> None:
    events: list[Event] = [
        TextDelta("First line\n", "m1", 0, None),
        TextDelta("Second", "m2", 0, None),
        TextDelta(" part", "m2", 0, None),
        TextDelta("Third", "m3", 1, None),
    ]
    assert answer_of(events) == "First line\n\nSecond part\n\nThird"


@pytest.mark.parametrize(
    ("since", "cost"),
    [
        ({}, 0.0),  # a failed or stopped turn that reached no model: not the session's total again
        ({"claude-sonnet": {"costUSD": 0.25}, "claude-haiku": {"costUSD": 0.05}}, 0.30),
        (None, 7.5),  # a CLI that does not say: its total is all there is
    ],
)
def test_a_turn_books_its_own_cost_not_the_sessions(since: dict[str, Any] | None, cost: float) -> None:
    raw: dict[str, Any] = {"type": "result", "subtype": "success", "is_error": True, "total_cost_usd": 7.5}
    if since is not None:
        raw["model_usage_since_last_result"] = since
    (result,) = parse_event(json.dumps(raw))
    assert isinstance(result, Result) and result.cost_usd == pytest.approx(cost)


def test_refused_tool_calls_are_read_from_the_result_whatever_their_shape() -> None:
    def denials(value: Any) -> Any:
        [result] = parse_event(json.dumps({"type": "result", "subtype": "success", "permission_denials": value}))
        assert isinstance(result, Result)
        return result.denials

    refused = [{"tool_name": "Bash", "tool_use_id": "t1", "tool_input": {"command": "rm -rf build"}}]
    assert denials(refused) == (("Bash", {"command": "rm -rf build"}),)
    assert denials([{"tool_input": "not a dict"}, "junk", 3]) == (("a tool", {}),)
    assert denials(None) == denials({"x": 1}) == ()
