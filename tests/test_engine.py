"""The engine's process handling, with a tiny fake CLI for what the real one cannot be made to do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from core.config import Settings
from core.engine import Engine, TurnRequest
from core.errors import ActivityTimeout, CancelReason, TurnCancelled, UpstreamError
from core.events import Result
from tests.conftest import Daemon, wait_no_processes
from tests.mock_anthropic import CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, INPUT_TOKENS, MockAnthropic
from tests.sse import post_sse

PREAMBLE = """
import json, os, subprocess, sys, time
STDIN = sys.stdin.readline()
def emit(obj):
    print(json.dumps(obj), flush=True)
emit({"type": "system", "subtype": "init", "session_id": "fake-session", "model": "claude-fake", "cwd": os.getcwd()})
def delta(text):
    emit({"type": "stream_event", "api_message_id": "m1", "parent_tool_use_id": None,
          "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}})
def result(text):
    emit({"type": "result", "subtype": "success", "is_error": False, "result": text, "session_id": "fake-session",
          "usage": {"input_tokens": 1, "output_tokens": 1}, "total_cost_usd": 0.0})
"""


def prompt(text: str) -> TurnRequest:
    return TurnRequest(prompt_for=lambda _: text, key="test:conversation")


async def run_turn(engine: Engine, text: str = "hi") -> tuple[str, Result | None]:
    async with engine.turn(prompt(text)) as turn:
        async for _ in turn:
            pass
    return turn.answer.text, turn.result


@pytest.fixture
def engine_settings(make_settings: Callable[..., Settings], fake_cli: Callable[[str], Path], cli_env: str):
    def build(script: str, **overrides: object) -> Settings:
        return make_settings(claude_bin=str(fake_cli(PREAMBLE + script)), **overrides)

    return build


async def test_output_keeps_the_watchdog_quiet(engine_settings: Callable[..., Settings]) -> None:
    settings = engine_settings(
        "for i in range(6):\n"
        "    time.sleep(0.4)\n"
        "    delta('.') if i % 2 else sys.stderr.write('working\\n') or sys.stderr.flush()\n"
        "result('...')\n",
        activity_timeout=1,
    )
    async with Engine(settings) as engine:
        text, result = await run_turn(engine)
    assert text == "..." and result is not None and not result.is_error


async def test_silence_trips_the_watchdog_and_kills_the_group(
    engine_settings: Callable[..., Settings], cli_env: str
) -> None:
    settings = engine_settings(
        "subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep 120'])\ndelta('partial')\ntime.sleep(120)\n",
        activity_timeout=1,
        kill_grace=0.5,
    )
    async with Engine(settings) as engine:
        with pytest.raises(ActivityTimeout) as caught:
            await run_turn(engine)
        assert caught.value.session_id == "fake-session"
        assert "waiting" in caught.value.last_activity or "started" in caught.value.last_activity
        # the child ignores SIGTERM: it must have been SIGKILLed with the group
        assert await wait_no_processes(cli_env, within=3) == []


async def test_cancel_stops_a_running_turn(engine_settings: Callable[..., Settings], cli_env: str) -> None:
    settings = engine_settings("delta('started')\ntime.sleep(120)\n", kill_grace=0.5)
    async with Engine(settings) as engine:
        async with engine.turn(prompt("hi")) as turn:
            seen = []
            with pytest.raises(TurnCancelled):
                async for event in turn:
                    seen.append(event)
                    if len(seen) == 1:  # the answer has begun
                        asyncio.get_running_loop().call_soon(
                            lambda: asyncio.ensure_future(turn.cancel(CancelReason.STOPPED))
                        )
        assert turn.outcome == "cancelled"
        assert await wait_no_processes(cli_env, within=3) == []
        assert await engine.store.get("test:conversation") is None


async def test_shutdown_cancels_running_turns(engine_settings: Callable[..., Settings], cli_env: str) -> None:
    settings = engine_settings("delta('started')\ntime.sleep(120)\n", kill_grace=0.5)
    engine = Engine(settings)
    await engine.__aenter__()
    errors: list[BaseException] = []

    async def consume(key: str) -> None:
        try:
            async with engine.turn(TurnRequest(prompt_for=lambda _: "hi", key=key)) as turn:
                async for _ in turn:
                    pass
        except TurnCancelled as exc:
            errors.append(exc)

    tasks = [asyncio.create_task(consume(f"k{i}")) for i in range(3)]
    while engine.running < 3:
        await asyncio.sleep(0.05)
    await engine.close()
    await asyncio.gather(*tasks)
    assert len(errors) == 3 and all("shutting down" in str(e) for e in errors)
    assert await wait_no_processes(cli_env, within=3) == []
    with pytest.raises(RuntimeError):
        engine.turn(prompt("after close"))


async def test_crash_mid_stream_ends_the_stream_with_an_error(
    start_daemon: Callable[..., object], fake_cli: Callable[[str], Path]
) -> None:
    path = fake_cli(PREAMBLE + "delta('half an ans')\nsys.stderr.write('Segmentation fault\\n')\nsys.exit(139)\n")
    daemon: Daemon = await start_daemon(claude_bin=str(path))  # type: ignore[assignment]
    answer = await post_sse(
        f"{daemon.url}/v1/chat/completions",
        {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status == 200 and answer.text == "half an ans"
    assert answer.finish_reasons == []
    assert len(answer.errors) == 1 and "Segmentation fault" in answer.errors[0]["message"]
    assert answer.data[-1] == "[DONE]"
    with pytest.raises(openai.InternalServerError) as caught:
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502 and "status 139" in caught.value.message


async def test_the_prompt_goes_on_stdin_not_argv(
    engine_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "seen.json"
    settings = engine_settings(
        f"seen = {{'argv': sys.argv, 'stdin': STDIN, 'claudecode': os.environ.get('CLAUDECODE')}}\n"
        f"open({str(record)!r}, 'w').write(json.dumps(seen))\n"
        "result('ok')\n"
    )
    monkeypatch.setenv("CLAUDECODE", "1")
    async with Engine(settings) as engine:
        await run_turn(engine, "--dangerous -p flag-looking prompt " + "y" * 200_000)
    seen = json.loads(record.read_text())
    assert not any("dangerous" in arg for arg in seen["argv"])
    assert {"-p", "--input-format", "--output-format", "--verbose", "--include-partial-messages"} <= set(seen["argv"])
    assert seen["argv"][seen["argv"].index("--permission-mode") + 1] == "bypassPermissions"
    assert "--max-turns" not in seen["argv"], "no turn limit unless one is configured"
    message = json.loads(seen["stdin"])
    assert message["type"] == "user" and message["message"]["content"].startswith("--dangerous -p")
    assert len(message["message"]["content"]) > 200_000
    assert seen["claudecode"] is None, "CLAUDECODE is removed from the child's environment"


async def test_failed_turns_record_no_session(daemon: Daemon, mock_api: MockAnthropic) -> None:
    client = daemon.client()
    headers = {"X-Conversation-Id": "fragile"}
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "ERR500 first"}], extra_headers=headers
        )
    assert await daemon.engine.store.get("http:open:fragile") is None
    await client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "second"}], extra_headers=headers
    )
    record = await daemon.engine.store.get("http:open:fragile")
    assert record is not None and record.turns == 1
    assert [t for r, t in mock_api.dialogue() if r == "user"] == ["second"], "a fresh session, not the failed one"


async def test_upstream_error_keeps_the_cli_message(daemon: Daemon) -> None:
    async with daemon.engine.turn(prompt("ERR429 please")) as turn:
        with pytest.raises(UpstreamError) as caught:
            async for _ in turn:
                pass
    assert caught.value.status == 429 and "mock 429" in caught.value.message
    assert await daemon.wait_no_strays() == []


async def test_debug_logs_every_cli_event(
    start_daemon: Callable[..., object], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    daemon: Daemon = await start_daemon(debug="1")  # type: ignore[assignment]
    with caplog.at_level(logging.DEBUG, logger="core.engine"):
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "dbg"}])
        for _ in range(100):  # the turn's line is written once the CLI has exited, after the answer
            if any(r.getMessage().startswith("turn ") for r in caplog.records):
                break
            await asyncio.sleep(0.05)
    events = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cli_event")]
    assert any("SessionInit" in e for e in events) and any("TextDelta" in e for e in events)
    assert any(e.startswith("cli_event") and "Result(" in e for e in events)
    turn_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("turn ")]
    assert (
        len(turn_lines) == 1
        and "outcome=ok" in turn_lines[0]
        and f"prompt_tokens={INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS}" in turn_lines[0]
    )
