"""A finished turn's summary: its outcome, time, tools and cost, said in one line at the end of the turn."""

from __future__ import annotations

import collections

from bot.progress import Progress
from core import format_duration

DONE = "✅ Done"
STOPPED = "⏹ Stopped"
TIMED_OUT = "⏱ Timed out"
FAILED = "⚠️ Failed"
OUTCOMES = (DONE, STOPPED, TIMED_OUT, FAILED)


def summary_line(
    progress: Progress, cost: float | None, outcome: str, fallback: str = "", refused: tuple[str, ...] = ()
) -> str:
    counts = collections.Counter(progress.tool_names)
    tools = ", ".join(f"{name}×{n}" if n > 1 else name for name, n in counts.most_common())
    parts = [outcome, format_duration(progress.elapsed)]
    if count := len(progress.tool_names):
        parts.append(f"{count} tool{'s' if count > 1 else ''} ({tools})")
    if refused:  # (the turn went on without them: Claude's answer may not say so)
        parts.append(f"🚫 refused: {'; '.join(refused)}")
    if fallback:
        parts.append(f"on {fallback}")
    if cost:  # (what the tokens would cost on the API; a subscription is not billed per turn)
        parts.append(f"${cost:.4f} at API prices")
    return " · ".join(parts)


def without_summary(text: str) -> str:
    """One of the bot's own messages without the summary (and tool log) a turn put at its end."""
    for outcome in OUTCOMES:
        at = text.rfind(f"\n\n{outcome} · ")
        if at >= 0:
            return text[:at]
    return text
