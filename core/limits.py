"""The subscription's usage windows, as the CLI last reported them (`rate_limit_event`), and what
the daemon does about them.

Kept in the engine, and in the store so a restart knows them (with when they were seen).
Windows whose reset has passed are shown as reset: their utilization is no longer the
subscription's. From them follow three decisions, all made here:

- warnings: a window crossing one of LIMIT_WARN_AT, or being rejected, is told once per reset
  period (`LimitCrossing`, handed to whoever listens: the bot);
- fallback: LIMIT_FALLBACK rules move a request for one model family to another model while a
  window is used above the rule's share;
- refusal: while a window that applies to the model is rejected (and the CLI said no overage is
  in use), a turn is refused at once with when it resets, without running the CLI: clients that
  retry a 429 (OpenClaw, nine times) would otherwise spend a CLI run on each retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from core.events import LimitWindow, RateLimit
from core.models import family

log = logging.getLogger("core.limits")

_SEVERITY = {"": 0, "allowed": 1, "allowed_warning": 2, "rejected": 3}
REACHED = 1.0  # the level of a rejected window: above every LIMIT_WARN_AT share (they are below 1)


@dataclass(frozen=True)
class FallbackRule:
    """LIMIT_FALLBACK's `opus=sonnet@0.9`: above 90 % of a window, Opus requests run on Sonnet."""

    source: str  # a model family: opus, sonnet, haiku
    target: str  # the CLI's --model to run on instead
    at: float  # the utilization (0..1) from which it applies


@dataclass(frozen=True)
class WindowState:
    window: LimitWindow
    observed_at: float  # epoch seconds
    # The highest level told of in this reset period (a LIMIT_WARN_AT share, or REACHED). The period ends at
    # the window's latest reset, or, when that is unknown, once its use falls below every level.
    warned: float = 0.0

    def current(self, now: float) -> LimitWindow:
        """The window as it stands at `now`: once its reset passed, nothing is used of it."""
        window = self.window
        if window.resets_at is not None and window.resets_at <= now:
            return LimitWindow(window.name, 0.0, None, "allowed")
        return window


@dataclass(frozen=True)
class LimitCrossing:
    """A window crossed a warning level, or was rejected, in the answer to one turn."""

    window: LimitWindow
    level: float  # the LIMIT_WARN_AT share crossed, or REACHED
    key: str  # the conversation whose turn's answer said so
    face: str  # the face that turn came from ("telegram", "http")

    @property
    def reached(self) -> bool:
        return self.level >= REACHED


CrossingListener = Callable[[LimitCrossing], Awaitable[None]]


def applies_to(window: str, model: str) -> bool:
    """Whether a window counts for a model: the plan-wide ones for all, `seven_day_opus` only for Opus."""
    scope = family(window)
    return scope is None or scope == family(model)


class SubscriptionLimits:
    def __init__(self, warn_at: Sequence[float] = (), fallback: Sequence[FallbackRule] = ()) -> None:
        self.warn_at = tuple(sorted(warn_at))
        self.fallback_rules = tuple(fallback)
        self.windows: dict[str, WindowState] = {}
        self.using_overage = False  # the CLI said the plan's overage is paying for use past the limit
        self._listeners: list[CrossingListener] = []

    # -- what the CLI says ----------------------------------------------------------

    def update(
        self, event: RateLimit, *, key: str = "", face: str = "", now: float | None = None
    ) -> tuple[list[WindowState], list[LimitCrossing]]:
        """Take what a rate_limit_event says: the windows it changed, and the levels crossed."""
        seen = time.time() if now is None else now
        if event.using_overage is not None:
            self.using_overage = event.using_overage
        changed, crossings = [], []
        for window in event.windows:
            state = self._judge(window, seen)
            if state.warned > self._warned(window.name, seen):
                crossings.append(LimitCrossing(window, state.warned, key, face))
            self.windows[window.name] = state
            changed.append(state)
        return changed, crossings

    def _warned(self, name: str, now: float) -> float:
        """The level already told of for a window in its current reset period."""
        state = self.windows.get(name)
        resets = state.window.resets_at if state is not None else None
        if state is None or (resets is not None and resets <= now):
            return 0.0
        return state.warned

    def _judge(self, window: LimitWindow, now: float) -> WindowState:
        warned = self._warned(window.name, now)
        used = window.utilization
        if used is not None and self.warn_at and used < self.warn_at[0] and window.status != "rejected":
            warned = 0.0  # below every level again: a new period, whatever its reset said
        crossed = [share for share in self.warn_at if used is not None and used >= share]
        warned = max(warned, REACHED if window.status == "rejected" else max(crossed, default=0.0))
        return WindowState(window, now, warned)

    def load(self, states: list[WindowState]) -> None:
        self.windows = {state.window.name: state for state in states}

    # -- who hears of crossings -----------------------------------------------------------

    def on_crossing(self, listener: CrossingListener) -> None:
        """Call `listener(crossing)` for every warning level crossed and every rejection (once per reset)."""
        self._listeners.append(listener)

    async def announce(self, crossings: list[LimitCrossing]) -> None:
        for crossing in crossings:
            window = crossing.window
            log.warning(
                "limit_crossed window=%s level=%s utilization=%s status=%s resets_at=%s conversation=%s",
                window.name, "reached" if crossing.reached else f"{crossing.level:g}", window.utilization,
                window.status or "-", int(window.resets_at) if window.resets_at else "-", crossing.key,
            )  # fmt: skip
            for listener in self._listeners:
                try:
                    await listener(crossing)
                except Exception:
                    log.exception("limit_notice_failed window=%s", window.name)

    # -- what follows for a turn -------------------------------------------------------------

    def _current(self, model: str, now: float) -> list[LimitWindow]:
        return [s.current(now) for name, s in self.windows.items() if applies_to(name, model)]

    def fallback(self, model: str, now: float | None = None) -> tuple[str, LimitWindow] | None:
        """(the model to run on instead, the window that moved it) when a LIMIT_FALLBACK rule applies."""
        moment = time.time() if now is None else now
        source = family(model)
        for rule in self.fallback_rules:
            if rule.source != source:
                continue
            for window in self._current(model, moment):
                if (window.utilization is not None and window.utilization >= rule.at) or window.status == "rejected":
                    return rule.target, window
        return None

    def refusal(self, model: str, now: float | None = None) -> LimitWindow | None:
        """The rejected window that refuses a turn on `model` until its reset, if any."""
        if self.using_overage:
            return None
        moment = time.time() if now is None else now
        rejected = [w for w in self._current(model, moment) if w.status == "rejected" and w.resets_at is not None]
        return max(rejected, key=lambda w: w.resets_at or 0, default=None)

    # -- shown ---------------------------------------------------------------------------------

    def snapshot(self, now: float | None = None) -> list[tuple[LimitWindow, float]]:
        """(window as it stands now, when it was seen), by name."""
        moment = time.time() if now is None else now
        return [(self.windows[name].current(moment), self.windows[name].observed_at) for name in sorted(self.windows)]

    def status(self, now: float | None = None) -> str:
        """The worst status of any window ("" when none was ever reported)."""
        windows = [window for window, _ in self.snapshot(now)]
        return max((w.status for w in windows), key=lambda s: _SEVERITY.get(s, 0), default="")
