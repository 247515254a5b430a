"""The subscription's limits as the real CLI reports them (`rate_limit_event`, on a subscription credential)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime

import aiohttp
import pytest

from core.events import RateLimit, parse_event
from tests.conftest import TELEGRAM_USER as USER
from tests.conftest import Daemon
from tests.fake_telegram import FakeTelegram
from tests.mock_anthropic import RESETS_5H_IN


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
