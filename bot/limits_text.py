"""The subscription's windows in a chat's words: "five-hour window: 91% used, resets in 2 h 10 min"."""

from __future__ import annotations

import math
import time

from core import LimitCrossing, SubscriptionLimits

_NAMES = {"five_hour": "five-hour window", "seven_day": "seven-day window", "seven_day_opus": "seven-day Opus window",
          "seven_day_sonnet": "seven-day Sonnet window"}  # fmt: skip


_FLAGS = {"rejected": " ⛔ limit reached", "allowed_warning": " ⚠️"}


def until(seconds: float) -> str:
    """A wait still to come in words, rounded up to the minute (so nobody retries too early): "2 h 10 min",
    "3 days 4 h", "1 min"."""
    return "a moment" if seconds <= 0 else _minutes_in_words(math.ceil(seconds / 60))


def since(seconds: float) -> str:
    """A time gone by in words, rounded down to the minute (90 s is "1 min"), at least "1 min"."""
    return _minutes_in_words(max(1, math.floor(seconds / 60)))


def _minutes_in_words(minutes: int) -> str:
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days} day{'s' if days > 1 else ''}" + (f" {hours} h" if hours else "")
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def window_name(name: str) -> str:
    """five_hour -> "five-hour window"."""
    return _NAMES.get(name, name.replace("_", " ") + " window")


def limit_lines(limits: SubscriptionLimits, now: float | None = None) -> list[str]:
    """One line per window the CLI reported; none when it never did (not on a subscription credential)."""
    moment = time.time() if now is None else now
    lines = []
    for window, _ in limits.snapshot(moment):
        name = window_name(window.name)
        used = f"{window.utilization * 100:.0f}% used" if window.utilization is not None else "use unknown"
        resets = f", resets in {until(window.resets_at - moment)}" if window.resets_at is not None else ""
        flag = _FLAGS.get(window.status, "")
        lines.append(f"{name[0].upper()}{name[1:]}: {used}{resets}{flag}")
    return lines


def crossing_text(crossing: LimitCrossing, *, http: bool, now: float | None = None) -> str:
    """The notice of a window crossing a warning level, or used up."""
    moment = time.time() if now is None else now
    window = crossing.window
    name = window_name(window.name)
    resets = f"; it resets in {until(window.resets_at - moment)}" if window.resets_at is not None else ""
    seen = " (seen in an HTTP client's turn)" if http else ""
    if crossing.reached:
        return f"⛔ Claude subscription: the {name} is used up{seen}{resets}. Until then new turns are refused."
    used = f"{(window.utilization or 0) * 100:.0f}%"
    return f"⚠️ Claude subscription: the {name} is {used} used{seen}{resets}."
