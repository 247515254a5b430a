"""Permission prompts in the engine, on the replay CLI: what the CLI is answered, and what a face sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.approvals import Shown
from core import (
    NO_APPROVER,
    AnswerDelta,
    ApprovalDone,
    ApprovalWaiting,
    CancelReason,
    Decision,
    Engine,
    Finished,
    PermissionPrompt,
    Settings,
    TurnCancelled,
    TurnEvent,
    TurnRequest,
)
from core.launcher import Launcher, LaunchOptions
from tests.fast.test_turns import delta, init, result

SUGGESTION = {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "touch x"}], "behavior": "allow",
              "destination": "localSettings"}  # fmt: skip
ASKS = {
    "type": "control_request", "request_id": "req-1",
    "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "touch x"},
                "description": "Create a file", "permission_suggestions": [SUGGESTION]},
}  # fmt: skip
TURN = [init(), ASKS, delta("after"), result("after")]


def answers(settings: Settings) -> list[dict[str, Any]]:
    """The control responses the daemon wrote to the replay CLI."""
    path = Path(str(settings.claude_bin)).parent / "replay.stdin"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [line["response"] for line in lines if line.get("type") == "control_response"]


async def run(engine: Engine) -> list[TurnEvent]:
    events: list[TurnEvent] = []
    request = TurnRequest(prompt_for=lambda _: "hi", key="tg:1", face="telegram", permission_mode="ask")
    async with engine.turn(request) as turn:
        async for event in turn:
            events.append(event)
    return events


def approver(engine: Engine, decide: Callable[[PermissionPrompt], Decision | None]) -> list[PermissionPrompt]:
    shown: list[PermissionPrompt] = []
    ended: list[tuple[PermissionPrompt, Decision]] = []

    async def show(prompt: PermissionPrompt) -> None:
        shown.append(prompt)
        decision = decide(prompt)
        if decision is not None:
            asyncio.get_running_loop().call_soon(engine.approvals.decide, prompt.id, decision)

    async def resolved(prompt: PermissionPrompt, decision: Decision) -> None:
        ended.append((prompt, decision))

    engine.approvals.register(show, resolved)
    return shown


async def test_an_allowed_tool_goes_on_with_its_input(replay: Callable[..., Settings]) -> None:
    settings = replay([TURN])
    async with Engine(settings) as engine:
        shown = approver(engine, lambda p: Decision(True, "Ann"))
        events = await run(engine)
    (prompt,) = shown
    assert (prompt.tool, prompt.input, prompt.description, prompt.key) == ("Bash", {"command": "touch x"},
                                                                           "Create a file", "tg:1")  # fmt: skip
    waiting = [e for e in events if isinstance(e, ApprovalWaiting)]
    assert len(waiting) == 1 and "touch x" in waiting[0].description
    assert [e.decision.allow for e in events if isinstance(e, ApprovalDone)] == [True]
    assert isinstance(events[-1], Finished) and events[-1].text == "after"
    (answer,) = answers(settings)
    assert answer == {"subtype": "success", "request_id": "req-1",
                      "response": {"behavior": "allow", "updatedInput": {"command": "touch x"}}}  # fmt: skip


async def test_always_allow_hands_the_cli_its_suggested_rules(replay: Callable[..., Settings]) -> None:
    settings = replay([TURN])
    async with Engine(settings) as engine:
        approver(engine, lambda p: Decision(True, "Ann", always=True))
        await run(engine)
    (answer,) = answers(settings)
    assert answer["response"]["updatedPermissions"] == [SUGGESTION]


async def test_a_denial_reaches_the_cli_with_its_message(replay: Callable[..., Settings]) -> None:
    settings = replay([TURN])
    async with Engine(settings) as engine:
        approver(engine, lambda p: Decision(False, "Ann", "not on my machine"))
        await run(engine)
    (answer,) = answers(settings)
    assert answer["response"] == {"behavior": "deny", "message": "not on my machine"}


async def test_with_nobody_to_ask_it_is_denied_at_once(replay: Callable[..., Settings]) -> None:
    settings = replay([TURN])
    async with Engine(settings) as engine:
        events = await run(engine)
    (answer,) = answers(settings)
    assert answer["response"] == {"behavior": "deny", "message": NO_APPROVER}
    assert isinstance(events[-1], Finished), "the turn goes on to its end"


async def test_no_answer_in_time_is_a_denial(replay: Callable[..., Settings]) -> None:
    settings = replay([TURN], approval_timeout=0.3)
    async with Engine(settings) as engine:
        approver(engine, lambda p: None)
        events = await run(engine)
    (answer,) = answers(settings)
    assert answer["response"]["behavior"] == "deny" and answer["response"]["message"] == (
        "Nobody approved this within 0.3 seconds."
    )
    assert [e.decision.by for e in events if isinstance(e, ApprovalDone)] == ["timeout"]


async def test_a_waiting_prompt_does_not_trip_the_activity_watchdog(replay: Callable[..., Settings]) -> None:
    settings = replay([TURN], activity_timeout=0.5)
    async with Engine(settings) as engine:

        def later(prompt: PermissionPrompt) -> None:
            asyncio.get_running_loop().call_later(1.2, engine.approvals.decide, prompt.id, Decision(True, "Ann"))

        approver(engine, lambda p: later(p))  # type: ignore[func-returns-value]
        events = await run(engine)
    assert isinstance(events[-1], Finished)


async def test_stopping_a_turn_withdraws_its_prompt(replay: Callable[..., Settings]) -> None:
    settings = replay([[init(), ASKS, {"replay": "hang"}]])
    async with Engine(settings) as engine:
        approver(engine, lambda p: None)
        request = TurnRequest(prompt_for=lambda _: "hi", key="tg:1", face="telegram", permission_mode="ask")
        async with engine.turn(request) as turn:
            with pytest.raises(TurnCancelled):
                async for event in turn:
                    if isinstance(event, ApprovalWaiting):
                        asyncio.get_running_loop().create_task(turn.cancel(CancelReason.STOPPED))
        assert engine.approvals.pending(turn.asking.id if turn.asking else "p0") is None
    (answer,) = answers(settings)
    assert answer["response"]["behavior"] == "deny" and "stopped" in answer["response"]["message"]


async def test_an_unknown_control_request_gets_an_error_and_the_turn_goes_on(replay: Callable[..., Settings]) -> None:
    weird = {"type": "control_request", "request_id": "req-9", "request": {"subtype": "teleport"}}
    settings = replay([[init(), weird, delta("fine"), result("fine")]])
    async with Engine(settings) as engine:
        events = await run(engine)
    assert [e.text for e in events if isinstance(e, AnswerDelta)] == ["fine"]
    (answer,) = answers(settings)
    assert answer["subtype"] == "error" and "teleport" in answer["error"]


@pytest.mark.parametrize(
    ("mode", "flags"),
    [
        ("ask", ["--permission-mode", "default", "--permission-prompt-tool", "stdio"]),
        ("acceptEdits", ["--permission-mode", "acceptEdits", "--permission-prompt-tool", "stdio"]),
        ("bypassPermissions", ["--permission-mode", "bypassPermissions"]),
    ],
)
def test_the_cli_is_started_in_the_turns_mode(replay: Callable[..., Settings], mode: str, flags: list[str]) -> None:
    launcher = Launcher(replay([]), marks={}, background=lambda work: None)
    argv = launcher.argv("", None, LaunchOptions(mode=mode))
    start = argv.index("--permission-mode")
    assert argv[start : start + len(flags)] == flags and argv.count("--permission-prompt-tool") == (len(flags) > 2)
    ask, bypass = LaunchOptions(mode="ask"), LaunchOptions(mode="bypassPermissions")
    assert launcher.signature("m", Path("/"), ask) != launcher.signature("m", Path("/"), bypass)


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@pytest.mark.parametrize(
    ("tool", "tool_input"),
    [
        ("Bash", {"command": "echo '<b>*_[`&amp;' " + "x" * 50_000, "description": "<i>huge</i>"}),
        ("Write", {"file_path": "/tmp/a_b*c.md", "content": "*bold* _it_ [a](b) `c`\n" * 5_000}),
        ("MultiEdit", {"file_path": "f.py", "edits": [{"old_string": "<" * 3000, "new_string": ">" * 3000}] * 40}),
        ("mcp__x__odd", {"blob": "\U0001f600" * 20_000}),
        ("ExitPlanMode", {"plan": "# Plan\n\n" + "".join(f"{i}. **step** `{i}`\n" for i in range(3000))}),
        ("AskUserQuestion", {"questions": [{"question": "<b>?" * 2000, "options": [{"label": "L" * 500}] * 4}]}),
    ],
)
def test_a_huge_prompt_stays_inside_telegrams_limits(tool: str, tool_input: dict[str, Any]) -> None:
    prompt = PermissionPrompt("p1", "tg:1", "telegram", tool, tool_input, "", ())
    shown = Shown(prompt, chat=1)
    text, entities = shown.body()
    assert utf16(text) <= 4096 and "not shown" in text, "cut, with a note"
    assert all(e.offset >= 0 and e.offset + e.length <= utf16(text) for e in entities), "entities inside the text"
    keys = [key for row in shown.keyboard().inline_keyboard for key in row]
    assert keys and all(len(str(key.callback_data).encode()) <= 64 for key in keys), "Telegram's callback limit"
