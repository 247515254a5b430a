"""How a resent history is recognised: the rule of `core.transcript`, on what real clients send.

Fast: no CLI, no daemon. The OpenClaw cases replay requests the real OpenClaw sent
(`tests/fixtures/openclaw/*.json`), varied the way clients vary them.
"""

from __future__ import annotations

import itertools
import json
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.turn_events import ClientToolCall
from proxy.conversation import BadConversation, PlannedTurn, plan_turn
from proxy.parked import ParkedTurn
from proxy.schema import ChatCompletionRequest

FIXTURES = Path(__file__).parents[1] / "fixtures" / "openclaw"


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


def _recorded(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / f"{name}.json").read_text())["requests"]


def _plan(body: dict[str, Any], scope: str = "s") -> PlannedTurn:
    return plan_turn(ChatCompletionRequest.model_validate(body), scope=scope)


def _answer(entry: dict[str, Any]) -> tuple[str, tuple[ClientToolCall, ...]]:
    answer = entry["answer"]
    return answer["text"], tuple(ClientToolCall(c["id"], c["name"], c["arguments"]) for c in answer["tool_calls"])


def _vary(body: dict[str, Any], change: Any) -> dict[str, Any]:
    varied = json.loads(json.dumps(body))
    varied["messages"] = [change(m) for m in varied["messages"]]
    return varied


def _reflow(message: dict[str, Any]) -> dict[str, Any]:
    """Whitespace changed and string content turned into text parts (and back)."""
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = [{"type": "text", "text": "  " + content.replace(" ", "  ") + "\n"}]
    elif isinstance(content, list) and all(p.get("type") == "text" for p in content):
        message["content"] = "\n".join(p["text"] for p in content)
    return message


def _other_ids(message: dict[str, Any]) -> dict[str, Any]:
    """Ids as OpenClaw leaves them, with the underscores of the originals (ours) back in place: either works."""
    for call in message.get("tool_calls") or []:
        call["id"] = call["id"].replace("toolumock", "toolu_mock_")
        call["function"]["arguments"] = json.dumps(json.loads(call["function"]["arguments"]), indent=2)
    if message.get("tool_call_id"):
        message["tool_call_id"] = message["tool_call_id"].replace("toolumock", "toolu_mock_")
    return message


@pytest.mark.parametrize("case", ["three_turns", "exec_tool", "four_tool_turns"])
@pytest.mark.parametrize("variation", [None, _reflow, _other_ids], ids=["as-sent", "reflowed", "other-ids"])
def test_every_openclaw_request_continues_what_the_one_before_recorded(case: str, variation: Any) -> None:
    """Each request's history is held by what the daemon recorded after the one before (or by the turn that waits
    for its tool results), although OpenClaw drops its context message, strips ids and re-serialises arguments."""
    entries = _recorded(case)
    assert len(entries) >= 2
    for before, after in itertools.pairwise(entries):
        text, calls = _answer(before)
        recorded = _plan(before["body"]).head_after(text, calls)
        body = _vary(after["body"], variation) if variation else after["body"]
        following = _plan(body)
        assert following.history is not None and recorded.holds(following.history)
        if calls:
            assert set(following.results_for(calls)) == {c.call_id for c in calls}, "the results reach the calls"


def test_openclaw_histories_of_other_conversations_are_not_held() -> None:
    entries = _recorded("three_turns")
    text, calls = _answer(entries[1])
    recorded = _plan(entries[1]["body"]).head_after(text, calls)
    third = entries[2]["body"]
    assert not recorded.holds(_plan(third, scope="another key").history)  # type: ignore[arg-type]

    def other_reply(message: dict[str, Any]) -> dict[str, Any]:
        if message["role"] == "assistant":
            message["content"] = "a reply this session never gave"
        return message

    def other_question(message: dict[str, Any]) -> dict[str, Any]:
        if message["role"] == "user" and "my name is Ada" in json.dumps(message):
            message["content"] = "my name is Grace"
        return message

    assert not recorded.holds(_plan(_vary(third, other_reply)).history)  # type: ignore[arg-type]
    assert not recorded.holds(_plan(_vary(third, other_question)).history)  # type: ignore[arg-type]


# -- when a client has moved on from a turn waiting for its tool results -----------------------------


def test_a_client_that_moved_on_is_told_apart_from_other_conversations() -> None:
    call = ClientToolCall("toolu_x", "exec", "{}")
    asked = plan(user("q1"), assistant("a1"), user("CALL"))
    turn: Any = SimpleNamespace(key="http:s:mine")
    transcript = asked.head_after("", (call,))
    parked = ParkedTurn(turn, events=None, calls=(call,), transcript=transcript, stack=AsyncExitStack())  # type: ignore[arg-type]

    def moved_on(request: PlannedTurn, key: str | None = None) -> bool:
        return parked.moved_on(request.sent, request.said, key)

    calls_kept = [user("q1"), assistant("a1"), user("CALL"), assistant(None, ("toolux", "exec", "{}"))]
    assert moved_on(plan(*calls_kept, user("never mind"))), "the calls, and a message instead of their results"
    assert moved_on(plan(user("q1"), assistant("a1"), user("CALL"))), "the same request again"
    assert not moved_on(plan(user("q1"), assistant("a1"), user("something else"))), "a branch of its own"
    assert not moved_on(plan(user("hello"))), "another conversation"
    assert not moved_on(plan(user("q1"), assistant("a1"), user("CALL"), scope="other key"))
    assert moved_on(plan(user("hello")), key="http:s:mine"), "the same explicit conversation"
    assert not moved_on(plan(user("q1"), assistant("a1"), user("CALL")), key="http:s:other")
