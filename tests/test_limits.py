"""The subscription's limits as the real CLI reports them (`rate_limit_event`, on a subscription credential)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletion

from claude_max.cli import usage as cli_usage
from core.events import RateLimit, parse_event
from proxy.limits import HEADER
from tests.conftest import TELEGRAM_USER as USER
from tests.conftest import Daemon
from tests.fake_telegram import FakeTelegram
from tests.mock_anthropic import RESETS_5H_IN, MockAnthropic


def turn_request(mock: MockAnthropic, text: str) -> dict[str, Any]:
    """The last API request that carried `text` (the CLI makes requests of its own besides)."""
    return next(body for body in reversed(mock.requests) if text in json.dumps(body.get("messages")))


@pytest.fixture
def subscription(monkeypatch: pytest.MonkeyPatch, cli_env: str) -> None:
    """The CLI on a subscription-style token: only then does it report the windows."""
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-mock-subscription-token")


async def get(daemon: Daemon, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}{path}") as response:
        return response.status, await response.text()


async def test_the_windows_the_cli_reports_are_shown_and_survive_a_restart(
    subscription: None, start_daemon: Callable[..., object]
) -> None:
    daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    before = await get(daemon, "/v1/limits")
    assert json.loads(before[1]) == {"status": "unknown", "windows": {}}, "nothing known before any turn"
    await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "LIMITS91 hi"}])
    status, text = await get(daemon, "/v1/limits")
    limits = json.loads(text)
    assert status == 200 and limits["status"] == "allowed_warning"
    five = limits["windows"]["five_hour"]
    assert five["utilization"] == 0.91 and five["status"] == "allowed_warning"
    resets_in = datetime.fromisoformat(five["resets_at"]).timestamp() - time.time()
    assert RESETS_5H_IN - 120 < resets_in <= RESETS_5H_IN
    assert limits["windows"]["seven_day"]["utilization"] == 0.4
    _, metrics = await get(daemon, "/metrics")
    assert 'claude_max_subscription_utilization{window="five_hour"} 0.91' in metrics
    assert 'claude_max_subscription_resets_at_seconds{window="seven_day"}' in metrics
    await daemon.engine.close()
    again: Daemon = await start_daemon()  # type: ignore[assignment]
    kept = json.loads((await get(again, "/v1/limits"))[1])
    assert kept["windows"]["five_hour"]["utilization"] == 0.91, "the state after a restart, with its age"
    assert kept["windows"]["five_hour"]["age_seconds"] >= 0


@pytest.mark.parametrize(
    ("line", "windows"),
    [
        ({"type": "rate_limit_event"}, {}),
        ({"type": "rate_limit_event", "rate_limit_info": "nonsense"}, {}),
        ({"type": "rate_limit_event", "rate_limit_info": {"status": 5, "resetsAt": "soon", "unifiedWindows": [1]}}, {}),
        ({"type": "rate_limit_event", "rate_limit_info": {"unifiedWindows": {
            "five_hour": {"utilization": "x", "resetsAt": True}, "new_window": {"utilization": 1.7, "status": 3}}}},
         {"five_hour": (None, None, ""), "new_window": (1.7, None, "")}),
    ],
)  # fmt: skip
def test_odd_rate_limit_lines_are_read_as_far_as_they_go(
    line: dict[str, object], windows: dict[str, tuple[object, object, str]]
) -> None:
    (event,) = parse_event(json.dumps(line))
    assert isinstance(event, RateLimit) and event.resets_at is None
    assert {w.name: (w.utilization, w.resets_at, w.status) for w in event.windows} == windows


async def test_status_in_telegram_shows_the_windows(
    subscription: None, start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    await start_bot(telegram_permission_mode="bypassPermissions")  # type: ignore[operator]
    telegram.user_sends("LIMITS91/40 hello")
    await telegram.wait_for(lambda: any("MOCK reply to" in t for t in telegram.texts_to(USER)), within=30)
    telegram.user_sends("/status")
    await telegram.wait_for(lambda: any("Five-hour window" in t for t in telegram.texts_to(USER)))
    status = next(t for t in telegram.texts_to(USER) if "Five-hour window" in t)
    assert "Five-hour window: 91% used, resets in 2 h 10 min ⚠️" in status, status
    assert "Seven-day window: 40% used, resets in 3 days" in status


NOTIFY = 4242  # the chat that hears of HTTP turns


async def ask(daemon: Daemon, text: str, model: str = "sonnet") -> ChatCompletion:
    return await daemon.client().chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def notices(telegram: FakeTelegram, chat: int) -> list[str]:
    return [t for t in telegram.texts_to(chat) if "Claude subscription" in t]


async def test_each_warning_level_is_told_once_per_reset_period(
    subscription: None, start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon: Daemon = await start_bot(telegram_notify_id=NOTIFY)  # type: ignore[operator]
    await ask(daemon, "LIMITS50 a")
    await ask(daemon, "LIMITS85@60 b")
    await telegram.wait_for(lambda: len(notices(telegram, NOTIFY)) == 1)
    first = notices(telegram, NOTIFY)[0]
    assert "five-hour window is 85% used (seen in an HTTP client's turn); it resets in 1 min" in first, first
    await ask(daemon, "LIMITS90@60 c")  # past the same level, in the same period: nothing new
    await ask(daemon, "LIMITS96@60 d")
    await telegram.wait_for(lambda: len(notices(telegram, NOTIFY)) == 2)
    assert "96% used" in notices(telegram, NOTIFY)[1]
    await ask(daemon, "LIMITS97@1 e")  # the window now resets in a second
    await asyncio.sleep(1.5)
    await ask(daemon, "LIMITS85@60 f")  # a new period: its first level is told again
    await telegram.wait_for(lambda: len(notices(telegram, NOTIFY)) == 3)
    assert "85% used" in notices(telegram, NOTIFY)[2]
    assert len(notices(telegram, USER)) == 0, "HTTP turns' warnings go to the notify chat only"
    await daemon.engine.close()
    again: Daemon = await start_bot(telegram_notify_id=NOTIFY)  # type: ignore[operator]
    await ask(again, "LIMITS86@60 g")  # after a restart, the level told of in this period is remembered
    await ask(again, "LIMITS96@60 h")
    await telegram.wait_for(lambda: len(notices(telegram, NOTIFY)) == 4)
    assert "96% used" in notices(telegram, NOTIFY)[3] and len(notices(telegram, NOTIFY)) == 4


async def test_a_chats_own_turn_warns_that_chat_and_a_used_up_window_refuses_at_once(
    subscription: None, start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    await start_bot(telegram_notify_id=NOTIFY)  # type: ignore[operator]
    telegram.user_sends("LIMITS82 hello")
    await telegram.wait_for(lambda: len(notices(telegram, USER)) == 1, within=30)
    assert "five-hour window is 82% used; it resets in 2 h 10 min." in notices(telegram, USER)[0]
    telegram.user_sends("LIMITS100 again")
    await telegram.wait_for(lambda: any("is used up" in t for t in telegram.texts_to(USER)), within=30)
    refused = next(t for t in telegram.texts_to(USER) if "is used up" in t)
    assert refused.startswith("⛔ The Claude subscription's five-hour window is used up: it resets in 2 h 10 min")
    asked = len(mock_api.requests)
    telegram.user_sends("and now?")
    await telegram.wait_for(lambda: sum("is used up" in t for t in telegram.texts_to(USER)) == 2)
    assert len(mock_api.requests) == asked, "refused without running the CLI"
    assert "\n\n⛔ Not run · " in refused, "its summary says nothing ran, not that something failed"
    assert notices(telegram, NOTIFY) == [], "a chat's own limits are told in that chat"
    assert not any("Claude subscription:" in t and "used up" in t for t in telegram.texts_to(USER)), (
        "the refusal says it once, not a notice besides"
    )


async def test_a_used_up_window_is_a_429_until_its_reset_without_running_the_cli(
    subscription: None, start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    daemon: Daemon = await start_bot(telegram_notify_id=NOTIFY)  # type: ignore[operator]
    with pytest.raises(openai.RateLimitError) as first:
        await ask(daemon, "LIMITS100 hi")
    assert first.value.code == "subscription_limit_reached"
    assert RESETS_5H_IN - 120 < int(first.value.response.headers["Retry-After"]) <= RESETS_5H_IN
    await telegram.wait_for(lambda: len(notices(telegram, NOTIFY)) == 1)
    told = notices(telegram, NOTIFY)[0]
    assert "five-hour window is used up (seen in an HTTP client's turn); it resets in 2 h 10 min" in told
    asked = len(mock_api.requests)
    for model in ("sonnet", "haiku"):  # a plan-wide window refuses every model
        with pytest.raises(openai.RateLimitError) as again:
            await ask(daemon, "hello", model)
        assert "five-hour limit is reached; it resets at" in again.value.message
    with pytest.raises(openai.RateLimitError):  # a stream too is refused before it begins
        await daemon.client().chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "streamed"}], stream=True
        )
    async with aiohttp.ClientSession() as http:
        body = {"model": "sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"{daemon.url}/v1/messages", json=body) as response:
            assert response.status == 429 and response.headers["Retry-After"]
            assert (await response.json())["error"]["type"] == "rate_limit_error"
    assert len(mock_api.requests) == asked, "no CLI ran for the refused turns"
    await daemon.engine.close()
    restarted: Daemon = await start_bot(telegram_notify_id=NOTIFY)  # type: ignore[operator]
    with pytest.raises(openai.RateLimitError):
        await ask(restarted, "after a restart")
    assert len(mock_api.requests) == asked and len(notices(telegram, NOTIFY)) == 1


async def test_a_window_whose_reset_passed_lets_turns_run_again(
    subscription: None, start_daemon: Callable[..., object]
) -> None:
    daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    with pytest.raises(openai.RateLimitError):
        await ask(daemon, "LIMITS100@1 hi")
    await asyncio.sleep(1.5)
    answer = await ask(daemon, "hello again")
    assert "MOCK reply to: hello again" in (answer.choices[0].message.content or "")


async def test_fallback_runs_on_the_other_model_above_its_share_and_says_so(
    subscription: None, start_daemon: Callable[..., object], mock_api: MockAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="core.engine")
    daemon: Daemon = await start_daemon(limit_fallback="opus=sonnet@0.9")  # type: ignore[assignment]
    first = await ask(daemon, "LIMITS85 one", "opus")
    assert "opus" in turn_request(mock_api, "one")["model"] and first.model == "opus"
    await ask(daemon, "LIMITS91 two", "opus")  # still below when the turn began
    third = await ask(daemon, "three", "opus")
    ran_on = turn_request(mock_api, "three")["model"]
    assert "sonnet" in ran_on and third.model == ran_on, "the answer's model says which model answered"
    assert any("limit_fallback" in r.getMessage() and "from=opus to=sonnet" in r.getMessage() for r in caplog.records)
    fourth = await ask(daemon, "four", "haiku")  # no rule for Haiku
    assert "haiku" in turn_request(mock_api, "four")["model"] and fourth.model == "haiku"


async def test_the_cli_runs_with_fallback_model(subscription: None, start_daemon: Callable[..., object]) -> None:
    daemon: Daemon = await start_daemon(fallback_model="haiku")  # type: ignore[assignment]
    answer = await ask(daemon, "hello", "opus")  # (the flag's place in the command line: tests/fast/test_limits.py)
    assert "MOCK reply to: hello" in (answer.choices[0].message.content or "")


async def test_answers_carry_the_limits_header_and_usage_lists_the_windows(
    subscription: None, start_daemon: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{daemon.url}/v1/models") as response:
            assert HEADER not in response.headers, "nothing to tell before the CLI reported"
        await ask(daemon, "LIMITS91/40 hi")
        async with http.get(f"{daemon.url}/v1/models") as response:
            header = response.headers[HEADER]
    five, seven = header.split(", ")
    assert five.startswith("five_hour=0.91;resets=") and five.endswith(";status=allowed_warning")
    assert seven.startswith("seven_day=0.4;resets=")
    await cli_usage(daemon.settings, 1)
    out = capsys.readouterr().out
    assert "five_hour: 91% used, resets" in out and ("(in 2h 09m)" in out or "(in 2h 10m)" in out), out
    assert "seven_day: 40% used" in out and "allowed_warning" in out


async def test_the_chats_summary_says_a_turn_ran_on_the_fallback(
    subscription: None, start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    await start_bot(limit_fallback="opus=sonnet@0.9")  # type: ignore[operator]
    telegram.user_sends("/model opus")
    await telegram.wait_for(lambda: any("Model set to opus" in t for t in telegram.texts_to(USER)))
    telegram.user_sends("LIMITS91 first")
    await telegram.wait_for(lambda: any("MOCK reply to: LIMITS91 first" in t for t in telegram.texts_to(USER)), 30)
    telegram.user_sends("second")
    await telegram.wait_for(lambda: any("on opus → sonnet" in t for t in telegram.texts_to(USER)), within=30)
    answer = next(t for t in telegram.texts_to(USER) if "on opus → sonnet" in t)
    summary = answer[answer.index("\n\n✅ Done · ") :]
    assert "five_hour window at 91%" in summary
    assert "sonnet" in turn_request(mock_api, "second")["model"]
