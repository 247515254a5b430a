"""The proxy as the openai JavaScript SDK sees it, called the way OpenClaw's provider calls it: streaming, full history,
no conversation id. (The real OpenClaw runs in test_openclaw.py; this one measures the stream's gaps precisely.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from tests.conftest import Daemon
from tests.mock_anthropic import CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, INPUT_TOKENS, MockAnthropic


async def run_client(command: list[str], daemon: Daemon, turns: list[str]) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        *command, f"{daemon.url}/v1", json.dumps(turns), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def test_multi_turn_exchange_ends_cleanly_with_usage(
    daemon: Daemon, mock_api: MockAnthropic, openclaw_client: list[str]
) -> None:
    turns = await run_client(openclaw_client, daemon, ["my name is Ada", "what is my name?", "thanks"])
    assert [t["content"] for t in turns] == [
        "MOCK reply to: my name is Ada",
        "MOCK reply to: what is my name?",
        "MOCK reply to: thanks",
    ]
    for turn in turns:
        assert turn["finishReasons"] == ["stop"]
        assert turn["toolCalls"] == 0, "Claude Code's own tools never come back as tool_calls"
        usage = turn["usage"]
        assert usage["prompt_tokens"] == INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS
        assert usage["prompt_tokens_details"]["cached_tokens"] == CACHE_READ_TOKENS
        assert usage["completion_tokens"] > 0
    # No id was sent, yet the third turn went into the same CLI session: the API saw the earlier turns.
    dialogue = mock_api.dialogue()
    users = [text for role, text in dialogue if role == "user"]
    assert users[-1] == "thanks" and "what is my name?" in users
    assert ("assistant", "MOCK reply to: my name is Ada") in dialogue
    assert "<instructions>" not in users[-1], "the unchanged system prompt is not sent again"


async def test_a_long_tool_run_keeps_the_watchdog_fed(
    start_daemon: Callable[..., object], openclaw_client: list[str]
) -> None:
    daemon: Daemon = await start_daemon(proxy_progress_every=0.5)  # type: ignore[assignment]
    (turn,) = await run_client(openclaw_client, daemon, ["SLOW_TOOL: run the slow command"])
    assert turn["content"] == "I will run a command.\n\nTool said: hi"
    assert turn["finishReasons"] == ["stop"]
    assert "💻 Bash: python3 -c" in turn["reasoning"]
    assert "still working" in turn["reasoning"]
    assert max(turn["gaps"]) < 1500, "never more than the keep-alive interval (plus slack) without activity"


async def test_text_progress_keeps_the_conversation_recognised(
    start_daemon: Callable[..., object], mock_api: MockAnthropic, openclaw_client: list[str]
) -> None:
    daemon: Daemon = await start_daemon(proxy_progress="text", proxy_progress_every=0.5)  # type: ignore[assignment]
    first, second = await run_client(openclaw_client, daemon, ["USE_TOOL first", "and then?"])
    assert "> 💻 Bash: echo hi" in first["content"] and first["content"].endswith("Tool said: hi")
    assert first["reasoning"] == ""
    # The client resent the answer with its progress lines; the session still continued.
    assert mock_api.dialogue()[-1] == ("user", "and then?")
    assert any(text.endswith("USE_TOOL first") for role, text in mock_api.dialogue() if role == "user")
    assert second["content"] == "MOCK reply to: and then?"
