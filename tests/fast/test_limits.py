"""The subscription's limits: what follows from the windows (warnings, fallback, refusal), the settings
that steer it, and the words a chat is told. The real CLI's side is tests/test_limits.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.limits_text import crossing_text
from bot.progress import Progress
from bot.summary import summary_line
from core import FallbackRule, LimitWindow, Settings, SubscriptionLimits, load_settings
from core.events import RateLimit
from core.launcher import Launcher

NOW = 1_800_000_000.0
HOUR = 3600.0


def event(*windows: tuple[str, float | None, float | None, str], overage: bool | None = None) -> RateLimit:
    found = tuple(LimitWindow(name, used, resets, status) for name, used, resets, status in windows)
    return RateLimit(found[0].status if found else "", None, None, found, overage)


def five(used: float, resets_in: float = HOUR, status: str = "allowed") -> tuple[str, float, float, str]:
    return ("five_hour", used, NOW + resets_in, status)


def levels(limits: SubscriptionLimits, *events: tuple[RateLimit, float]) -> list[float]:
    """The levels told of, event after event (each at its own time)."""
    told = []
    for each, at in events:
        told += [c.level for c in limits.update(each, key="k", face="http", now=at)[1]]
    return told


def test_each_level_is_told_once_per_period_and_again_after_its_reset() -> None:
    limits = SubscriptionLimits((0.8, 0.95))
    told = levels(
        limits,
        (event(five(0.5)), NOW), (event(five(0.82)), NOW + 1), (event(five(0.9)), NOW + 2),
        (event(five(0.96)), NOW + 3), (event(five(0.99)), NOW + 4),
        (event(five(0.85, resets_in=HOUR)), NOW + HOUR + 5),  # after the reset it told of: a new period
    )  # fmt: skip
    assert told == [0.8, 0.95, 0.8]


def test_a_rejected_window_is_told_once_above_every_level_and_a_fall_starts_a_new_period() -> None:
    limits = SubscriptionLimits((0.8,))
    told = levels(
        limits,
        (event(five(0.9)), NOW), (event(five(1.0, status="rejected")), NOW + 1),
        (event(five(1.0, status="rejected")), NOW + 2),
        (event(("five_hour", 0.1, None, "allowed")), NOW + 3),  # reset unknown, but the use fell: a new period
        (event(("five_hour", 0.81, None, "allowed")), NOW + 4),
    )  # fmt: skip
    assert told == [0.8, 1.0, 0.8]


def test_a_restart_remembers_what_was_told() -> None:
    before = SubscriptionLimits((0.8,))
    changed, _ = before.update(event(five(0.85)), now=NOW)
    after = SubscriptionLimits((0.8,))
    after.load(changed)
    assert levels(after, (event(five(0.9)), NOW + 60)) == []


def test_the_refusal_lasts_until_the_reset_for_the_models_it_counts_for() -> None:
    limits = SubscriptionLimits()
    limits.update(event(("seven_day_opus", 1.0, NOW + HOUR, "rejected"), five(0.5)), now=NOW)
    refused = limits.refusal("opus", now=NOW + 10)
    assert refused is not None and refused.name == "seven_day_opus"
    assert limits.refusal("claude-sonnet-4-5", now=NOW + 10) is None, "an Opus window does not stop Sonnet"
    assert limits.refusal("opus", now=NOW + HOUR + 1) is None, "after the reset"
    limits.update(event(five(1.0, status="rejected")), now=NOW)
    assert limits.refusal("haiku", now=NOW + 10) is not None, "a plan-wide window stops every model"


def test_no_refusal_while_overage_pays_or_without_a_reset() -> None:
    limits = SubscriptionLimits()
    limits.update(event(five(1.0, status="rejected"), overage=True), now=NOW)
    assert limits.refusal("opus", now=NOW) is None
    other = SubscriptionLimits()
    other.update(event(("five_hour", 1.0, None, "rejected")), now=NOW)
    assert other.refusal("opus", now=NOW) is None, "no reset time: the CLI is asked (the API says when)"


def test_odd_windows_shown_as_far_as_they_go() -> None:
    limits = SubscriptionLimits((0.8,))
    limits.update(event(("five_hour", 1.7, NOW - 60, "allowed"), ("weird", None, None, "")), now=NOW - 120)
    shown = {w.name: w for w, _ in limits.snapshot(now=NOW)}
    assert shown["five_hour"].utilization == 0.0 and shown["five_hour"].status == "allowed", "its reset passed"
    assert shown["weird"].utilization is None and limits.status(now=NOW) == "allowed"


def test_fallback_moves_only_its_family_and_only_above_its_share() -> None:
    limits = SubscriptionLimits(fallback=(FallbackRule("opus", "sonnet", 0.9),))
    limits.update(event(five(0.89)), now=NOW)
    assert limits.fallback("opus", now=NOW) is None
    limits.update(event(five(0.9)), now=NOW)
    moved = limits.fallback("claude-opus-4-5", now=NOW)
    assert moved is not None and moved[0] == "sonnet" and moved[1].name == "five_hour"
    assert limits.fallback("sonnet", now=NOW) is None and limits.fallback("", now=NOW) is None
    assert limits.fallback("opus", now=NOW + 2 * HOUR) is None, "the window reset"


def test_limit_settings_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMIT_WARN_AT", "95%, 0.5")
    monkeypatch.setenv("LIMIT_FALLBACK", "opus=sonnet@0.9, claude-sonnet-4=haiku@98%")
    monkeypatch.setenv("FALLBACK_MODEL", "sonnet")
    settings = load_settings(_env_file=None)
    assert settings.limit_warn_at == (0.5, 0.95)
    assert settings.limit_fallback == (FallbackRule("opus", "sonnet", 0.9), FallbackRule("sonnet", "haiku", 0.98))
    assert settings.fallback_model == "sonnet"


def test_the_fallback_model_is_on_the_command_line_unless_it_is_the_model(
    replay: Callable[..., Settings], tmp_path: Path
) -> None:
    launcher = Launcher(replay([], fallback_model="haiku"), marks={}, background=lambda work: None)
    argv = launcher.argv("opus", None)
    assert argv[argv.index("--fallback-model") + 1] == "haiku"
    assert "--fallback-model" not in launcher.argv("haiku", None)


def test_a_crossing_in_a_chats_words() -> None:
    limits = SubscriptionLimits((0.8,))
    _, (warned,) = limits.update(event(five(0.91, resets_in=2 * HOUR + 600)), key="tg:1", face="telegram", now=NOW)
    assert crossing_text(warned, http=False, now=NOW) == (
        "⚠️ Claude subscription: the five-hour window is 91% used; it resets in 2 h 10 min."
    )
    _, (reached,) = limits.update(event(five(1.0, 300, "rejected")), key="http:x", face="http", now=NOW)
    assert crossing_text(reached, http=True, now=NOW) == (
        "⛔ Claude subscription: the five-hour window is used up (seen in an HTTP client's turn); it resets in 5 min. "
        "Until then new turns are refused."
    )


def test_the_summary_says_the_turn_ran_on_a_fallback(replay: Callable[..., Settings]) -> None:
    progress = Progress(None, 1, 1.0, True)  # type: ignore[arg-type]
    line = summary_line(progress, 0.0, "✅ Done", "opus → sonnet: five_hour window at 91%")
    assert "on opus → sonnet: five_hour window at 91%" in line
