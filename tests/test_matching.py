"""How a resent history is recognised: the rule of `core.transcript`, on what real clients send.

Fast: no CLI, no daemon. The OpenClaw cases replay requests the real OpenClaw sent
(`tests/fixtures/openclaw/*.json`), varied the way clients vary them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.client_tools import ClientToolCall
from proxy.conversation import BadConversation, PlannedTurn, plan_turn
from proxy.schema import ChatCompletionRequest

FIXTURES = Path(__file__).parent / "fixtures" / "openclaw"


def plan(*messages: dict[str, Any], scope: str = "s") -> PlannedTurn:
    return plan_turn(ChatCompletionRequest.model_validate({"messages": list(messages)}), scope=scope)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str | None, *calls: tuple[str, str, str]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls
        ]
    return message


def tool(call_id: str, text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


EPHEMERAL = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\nactive exec sessions: none\n<<<END_OPENCLAW_INTERNAL_CONTEXT>>>"


def recorded(first: PlannedTurn, answer: str, calls: tuple[ClientToolCall, ...] = ()) -> Any:
    """The transcript the engine records after `first` was answered with `answer` (and `calls`)."""
    return first.head_after(answer, calls)


# -- the rule on hand-made histories -------------------------------------------------------------


def test_a_message_injected_for_one_request_only_does_not_break_the_conversation() -> None:
    first = plan(user("my name is Ada"), user(EPHEMERAL))
    second = plan(user("my name is Ada"), assistant("Hello Ada"), user("what is my name?"), user(EPHEMERAL + "2"))
    assert second.history is not None and recorded(first, "Hello Ada").holds(second.history)
    third = plan(
        user("my name is Ada"),
        assistant("Hello Ada"),
        user("what is my name?"),
        assistant("Ada"),
        user("thanks"),
        user(EPHEMERAL + "3"),
    )
    assert third.history is not None and recorded(second, "Ada").holds(third.history)


def test_whitespace_content_parts_argument_spelling_and_ids_do_not_matter() -> None:
    call = ClientToolCall("toolu_mock_0a1b", "exec", '{"command": "echo hi", "timeout": 5}')
    first = plan(user("run it"))
    back = plan(
        {"role": "user", "content": [{"type": "text", "text": "  run   it\n"}]},
        assistant(None, ("toolumock0a1b", "exec", '{"timeout":5,"command":"echo hi"}')),
        tool("toolumock0a1b", "hi"),
    )
    assert back.history is not None and recorded(first, "", (call,)).holds(back.history)
    assert back.results_for([call]) == {"toolu_mock_0a1b": ("hi", False)}


def test_two_conversations_that_share_a_long_prefix_are_not_merged() -> None:
    shared = [user("q1"), assistant("a1"), user("q2"), assistant("a2")]
    ours = plan(*shared, user("ours"))
    theirs = plan(*shared, user("theirs"), assistant("same answer"), user("next"))
    assert theirs.history is not None and not recorded(ours, "same answer").holds(theirs.history)


def test_an_edited_earlier_message_is_a_different_history() -> None:
    first = plan(user("q1"), assistant("a1"), user("q2"))
    edited = plan(user("q1 edited"), assistant("a1"), user("q2"), assistant("a2"), user("q3"))
    assert edited.history is not None and not recorded(first, "a2").holds(edited.history)


def test_a_message_the_session_never_saw_is_not_held() -> None:
    first = plan(user("q1"))
    grown = plan(user("q1"), user("something the session never saw"), assistant("a1"), user("q2"))
    assert grown.history is not None and not recorded(first, "a1").holds(grown.history)


def test_a_reply_cannot_lose_everything_it_answered() -> None:
    first = plan(user("q1"), assistant("a1"), user("q2"))
    skipped = plan(user("q1"), assistant("a1"), assistant("a2"), user("q3"))
    assert skipped.history is not None and not recorded(first, "a2").holds(skipped.history)


def test_a_changed_or_dropped_reply_is_a_different_history() -> None:
    first = plan(user("q1"))
    assert not recorded(first, "a1").holds(plan(user("q1"), assistant("a1 changed"), user("q2")).history)  # type: ignore[arg-type]
    two = plan(user("q1"), assistant("a1"), user("q2"))
    assert not recorded(two, "a2").holds(plan(user("q1"), assistant("a1"), user("q3")).history)  # type: ignore[arg-type]


def test_tool_results_for_calls_never_issued_are_refused() -> None:
    call = ClientToolCall("toolu_a", "exec", "{}")
    back = plan(user("q"), assistant(None, ("toolu_b", "exec", "{}")), tool("toolu_b", "x"))
    with pytest.raises(BadConversation, match="never issued"):
        back.results_for([call])


def test_ids_that_collide_after_normalisation_are_matched_exactly_or_refused() -> None:
    calls = [ClientToolCall("call_1", "exec", '{"n": 1}'), ClientToolCall("call1", "exec", '{"n": 2}')]
    exact = plan(
        user("q"),
        assistant(None, ("call_1", "exec", '{"n": 1}'), ("call1", "exec", '{"n": 2}')),
        tool("call_1", "one"),
        tool("call1", "two"),
    )
    assert exact.results_for(calls) == {"call_1": ("one", False), "call1": ("two", False)}
    ambiguous = plan(user("q"), assistant(None, ("call-1", "exec", '{"n": 1}')), tool("call-1", "?"))
    with pytest.raises(BadConversation, match="fits several"):
        ambiguous.results_for(calls)


# -- the real OpenClaw's requests ----------------------------------------------------------------


def _fixture(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / f"{name}.json").read_text())["requests"]


def _bodies(name: str) -> list[ChatCompletionRequest]:
    return [ChatCompletionRequest.model_validate(body) for body in _fixture(name)]
