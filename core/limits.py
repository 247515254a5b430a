"""The subscription's usage windows, as the CLI last reported them (`rate_limit_event`).

Kept in the engine, and in the store so a restart knows them (with when they were seen).
Windows whose reset has passed are shown as reset: their utilization is no longer the
subscription's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.events import LimitWindow, RateLimit

_SEVERITY = {"": 0, "allowed": 1, "allowed_warning": 2, "rejected": 3}


@dataclass(frozen=True)
class WindowState:
    window: LimitWindow
    observed_at: float  # epoch seconds

    def current(self, now: float) -> LimitWindow:
        """The window as it stands at `now`: once its reset passed, nothing is used of it."""
        window = self.window
        if window.resets_at is not None and window.resets_at <= now:
            return LimitWindow(window.name, 0.0, None, "allowed")
        return window


class SubscriptionLimits:
    def __init__(self) -> None:
        self.windows: dict[str, WindowState] = {}

    def update(self, event: RateLimit, now: float | None = None) -> list[WindowState]:
        """Take what a rate_limit_event says; the windows it changed."""
        seen = time.time() if now is None else now
        changed = []
        for window in event.windows:
            state = WindowState(window, seen)
            self.windows[window.name] = state
            changed.append(state)
        return changed

    def load(self, states: list[WindowState]) -> None:
        self.windows = {state.window.name: state for state in states}

    def snapshot(self, now: float | None = None) -> list[tuple[LimitWindow, float]]:
        """(window as it stands now, when it was seen), by name."""
        moment = time.time() if now is None else now
        return [(self.windows[name].current(moment), self.windows[name].observed_at) for name in sorted(self.windows)]

    def status(self, now: float | None = None) -> str:
        """The worst status of any window ("" when none was ever reported)."""
        windows = [window for window, _ in self.snapshot(now)]
        return max((w.status for w in windows), key=lambda s: _SEVERITY.get(s, 0), default="")
