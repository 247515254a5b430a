"""The real OpenClaw (npm `openclaw`, pinned, installed by `make test`) against the daemon and the real CLI.

Each turn is `openclaw agent --local --json` in a sandbox that reaches nothing but the daemon
(`tests/openclaw_runner.py`), configured from the product's own `claude-max openclaw-config`.
A turn takes 15-20 s, mostly OpenClaw starting up, so these tests are few and each says a lot.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core import Turn
from proxy.keys import PARKED
from tests.conftest import Daemon, empty_env
from tests.mock_anthropic import MockAnthropic, newest_user_text
from tests.openclaw_runner import DEFAULT_PREFIX, OpenClaw, OpenClawTurn

CLAUDE_MAX = Path(sys.executable).parent / "claude-max"


@pytest.fixture
def openclaw(tmp_path: Path) -> Callable[[Daemon], OpenClaw]:
    if not (DEFAULT_PREFIX / "node_modules/openclaw/openclaw.mjs").is_file():
        pytest.fail(f"OpenClaw is not installed in {DEFAULT_PREFIX}; run the tests with `make test`", pytrace=False)

    def build(daemon: Daemon) -> OpenClaw:
        return OpenClaw(tmp_path / "openclaw", daemon.url, claude_max=CLAUDE_MAX, env_file=empty_env(tmp_path))

    return build


def turns_of(daemon: Daemon) -> list[Turn]:
    """The engine's turns, as they end."""
    ended: list[Turn] = []

    async def listener(turn: Turn, error: BaseException | None) -> None:
        ended.append(turn)

    daemon.engine.on_turn_end(listener)
    return ended


def receipt(turn: OpenClawTurn) -> dict[str, Any]:
    return turn.output["meta"]["agentMeta"]["terminalReceipt"]


async def test_one_turn(daemon: Daemon, mock_api: MockAnthropic, openclaw: Callable[[Daemon], OpenClaw]) -> None:
    claw = openclaw(daemon)
    turn = await claw.turn("one", "hello there")
    assert turn.ok, turn.stderr
    assert turn.text.startswith("MOCK reply to:"), "the mock's answer reached OpenClaw's user"
    assert "hello there" in newest_user_text(mock_api.requests[-1])
    assert receipt(turn)["rerouted"] is False, "the answer names the model OpenClaw asked for"
    assert receipt(turn)["effective"]["model"] == "claude-sonnet-4"
    provider = json.loads(claw.config_path.read_text())["models"]["providers"]["claude-max"]
    assert provider["baseUrl"] == f"{daemon.url}/v1", "configured by claude-max openclaw-config"
    prompt = json.dumps(mock_api.requests[-1]["messages"][0])
    assert "<instructions>" in prompt, "OpenClaw's system prompt travels in the user turn, not as a system prompt"


async def test_three_turns_resume_the_same_warm_session(
    daemon: Daemon, mock_api: MockAnthropic, openclaw: Callable[[Daemon], OpenClaw]
) -> None:
    ended = turns_of(daemon)
    claw = openclaw(daemon)
    for message in ("my name is Ada", "what is my name?", "thanks"):
        turn = await claw.turn("s1", message)
        assert turn.ok, turn.stderr
        assert turn.text.startswith("MOCK reply to:")
        assert message in newest_user_text(mock_api.requests[-1])
    assert [(t.resumed is not None, t.source, t.outcome) for t in ended] == [
        (False, "cold", "ok"),
        (True, "warm", "ok"),
        (True, "warm", "ok"),
    ]
    assert len({t.session_id for t in ended}) == 1
    # The API saw the real earlier turns, and the last prompt carried neither the history nor the instructions.
    dialogue = mock_api.dialogue()
    assert [role for role, _ in dialogue].count("assistant") == 2, "the two earlier answers, as real turns"
    assert any(role == "user" and "my name is Ada" in text for role, text in dialogue)
    assert any(role == "assistant" and "what is my name?" in text for role, text in dialogue)
    last_prompt = json.dumps(mock_api.requests[-1]["messages"][-1])
    assert "thanks" in last_prompt
    assert "<instructions>" not in last_prompt and "<conversation_history>" not in last_prompt


async def test_openclaws_exec_tool_continues_the_same_claude_turn(
    daemon: Daemon, mock_api: MockAnthropic, openclaw: Callable[[Daemon], OpenClaw]
) -> None:
    ended = turns_of(daemon)
    claw = openclaw(daemon)
    turn = await claw.turn("tools", 'CALL_CLIENT exec {"command": "echo from-openclaw-$((6*7))"}')
    assert turn.ok, turn.stderr
    assert turn.text == "Tool said: from-openclaw-42", "OpenClaw ran the command; its output reached Claude"
    assert "exec" in receipt(turn)["successfulToolNames"]
    assert [t.outcome for t in ended] == ["ok"], "one Claude turn served the call and its result"
    results = [b for b in mock_api.requests[-1]["messages"][-1]["content"] if b.get("type") == "tool_result"]
    assert len(results) == 1 and "from-openclaw-42" in json.dumps(results[0])


async def test_four_tool_turns_in_a_row_leave_nothing_running(
    daemon: Daemon, mock_api: MockAnthropic, openclaw: Callable[[Daemon], OpenClaw]
) -> None:
    ended = turns_of(daemon)
    claw = openclaw(daemon)
    for n in range(4):
        turn = await claw.turn("four", f'CALL_CLIENT exec {{"command": "echo round-{n}"}}')
        assert turn.ok, turn.stderr
        assert turn.text == f"Tool said: round-{n}"
    assert [(t.outcome, t.resumed is not None) for t in ended] == [("ok", False)] + [("ok", True)] * 3
    assert daemon.engine.running == daemon.engine.waiting_for_clients == 0, "no turn left running or waiting"
    assert len(daemon.app[PARKED]) == 0


async def test_an_upstream_429_surfaces_at_once(
    daemon: Daemon, mock_api: MockAnthropic, openclaw: Callable[[Daemon], OpenClaw]
) -> None:
    claw = openclaw(daemon)
    started = time.monotonic()
    turn = await claw.turn("limited", "please answer ERR429 now")
    assert time.monotonic() - started < 60, "not after minutes of OpenClaw's retries"
    assert not turn.ok
    assert "usage or rate limit was reached" in turn.output["error"]["message"], "the daemon's words reach the user"
    asked = [r for r in mock_api.requests if "ERR429" in newest_user_text(r)]
    assert len(asked) == 1, "OpenClaw did not retry, so the CLI ran once"
