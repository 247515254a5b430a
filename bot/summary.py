"""A finished turn's summary: its outcome, time, tools and cost, said in one line at the end of the turn."""

from __future__ import annotations

import collections

from bot.progress import Progress
from core import ActivityTimeout, ClaudeMaxError, LimitReached, ProjectError, TurnCancelled, format_duration

DONE = "✅ Done"
STOPPED = "⏹ Stopped"
STOPPED_HERE = "⏹ Stopped here"  # (below what Claude had written)
TIMED_OUT = "⏱ Timed out"
NOT_RUN = "⛔ Not run"  # nothing reached Claude: a used-up subscription window, a project gone
FAILED = "⚠️ Failed"
OUTCOMES = (DONE, STOPPED_HERE, STOPPED, TIMED_OUT, NOT_RUN, FAILED)


def outcome_of(error: ClaudeMaxError) -> str:
    if isinstance(error, TurnCancelled):
        return STOPPED
    if isinstance(error, ActivityTimeout):
        return TIMED_OUT
    if isinstance(error, (LimitReached, ProjectError)):
        return NOT_RUN
    return FAILED


def summary_line(
    progress: Progress, cost: float | None, outcome: str, fallback: str = "", refused: tuple[str, ...] = ()
) -> str:
    """The turn in one line: "✅ Done · 42s · 2 tools (Bash, Read) · $0.0312 at API prices"; a call that was
    refused is named as such, not counted as a tool used."""
    ran = list(zip(progress.tool_names, progress.tools, strict=True))
    for description in refused:
        ran = _without_first(ran, description)
    counts = collections.Counter(name for name, _ in ran)
    tools = ", ".join(f"{name}×{n}" if n > 1 else name for name, n in counts.most_common())
    parts = [outcome, format_duration(progress.elapsed)]
    if count := len(ran):
        parts.append(f"{count} tool{'s' if count > 1 else ''} ({tools})")
    if refused:  # (the turn went on without them: Claude's answer may not say so)
        parts.append(f"🚫 refused: {'; '.join(refused)}")
    if fallback:
        parts.append(f"on {fallback}")
    if cost and cost >= 0.00005:  # (a cost that rounds to nothing is not worth a word)
        parts.append(at_api_prices(cost))
    return " · ".join(parts)


def at_api_prices(cost: float) -> str:
    """What the tokens would cost on the API (a subscription is not billed per turn)."""
    if 0 < cost < 0.00005:
        return "under $0.0001 at API prices"
    return f"${cost:.4f} at API prices"


def without_summary(text: str) -> str:
    """One of the bot's own messages without the summary (and tool log) a turn put at its end."""
    for outcome in OUTCOMES:
        at = text.rfind(f"\n\n{outcome} · ")
        if at >= 0:
            return text[:at]
    return text


def _without_first(calls: list[tuple[str, str]], description: str) -> list[tuple[str, str]]:
    for index, (_, described) in enumerate(calls):
        if described == description:
            return calls[:index] + calls[index + 1 :]
    return calls


def tool_log(progress: Progress, refused: tuple[str, ...] = ()) -> list[str]:
    """The turn's tool calls, in order, for its footer; a refused one marked 🚫."""
    left = list(refused)
    lines = []
    for description in progress.tools:
        if description in left:
            left.remove(description)
            description = f"🚫 {description} (refused)"
        lines.append(description)
    return lines
