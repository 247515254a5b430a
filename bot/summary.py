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
    skipped = refused_calls(progress, refused)
    counts = collections.Counter(n for i, n in enumerate(progress.tool_names) if i not in skipped)
    tools = ", ".join(f"{name}×{n}" if n > 1 else name for name, n in counts.most_common())
    parts = [outcome, format_duration(progress.elapsed)]
    if count := counts.total():
        parts.append(f"{count} tool{'s' if count > 1 else ''} ({tools})")
    if refused:  # (the turn went on without them: Claude's answer may not say so)
        parts.append(f"🚫 refused: {'; '.join(refused)}")
    if fallback:
        parts.append(f"on {fallback}")
    if cost and cost >= 0.00005:  # (a cost that rounds to nothing is not worth a word)
        parts.append(at_api_prices(cost))
    return " · ".join(parts)


def tool_log(progress: Progress, refused: tuple[str, ...] = ()) -> list[str]:
    """The turn's tool calls, in order, for its footer; a refused one marked 🚫."""
    skipped = refused_calls(progress, refused)
    return [f"🚫 {d} (refused)" if i in skipped else d for i, d in enumerate(progress.tools)]


def refused_calls(progress: Progress, refused: tuple[str, ...]) -> set[int]:
    """Which of the turn's calls (by index) were refused: for each refused description, the first call
    described so that is not taken yet (the CLI reports refusals by tool and input, not by call)."""
    taken: set[int] = set()
    for description in refused:
        index = next((i for i, d in enumerate(progress.tools) if d == description and i not in taken), None)
        if index is not None:
            taken.add(index)
    return taken


def at_api_prices(cost: float) -> str:
    """What the tokens would cost on the API (a subscription is not billed per turn)."""
    if not cost:
        return "$0 at API prices"
    if cost < 0.00005:
        return "under $0.0001 at API prices"
    return f"${cost:.4f} at API prices"


def without_summary(text: str) -> str:
    """One of the bot's own messages without the summary (and tool log) a turn put at its end."""
    for outcome in OUTCOMES:
        at = text.rfind(f"\n\n{outcome} · ")
        if at >= 0:
            return text[:at]
    return text
