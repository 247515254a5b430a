"""The one place where engine errors become what a chat is told."""

from __future__ import annotations

import time

from bot.limits_text import until, window_name
from bot.progress import Progress
from core import (
    ActivityTimeout,
    CancelReason,
    ClaudeMaxError,
    CLIUnavailable,
    EngineError,
    LimitReached,
    ProjectError,
    ShuttingDown,
    TurnCancelled,
    UpstreamError,
    format_duration,
)


def failure_text(error: ClaudeMaxError, progress: Progress) -> str:
    """What the chat is told when a turn fails."""
    if isinstance(error, ActivityTimeout):
        waited = format_duration(error.idle_seconds)
        if not progress.tools and not progress.answer and error.last_activity in ("started", "started the session"):
            what = f"the Anthropic API did not answer for {waited} (Claude Code had started the session and waited)"
        else:
            last = progress.doing if progress.tools or progress.answer else error.last_activity
            what = f"Claude Code printed nothing for {waited} (last: {last})"
        return f"⏱ Stopped: {what}. The conversation is kept: send a message to go on."
    if isinstance(error, ShuttingDown) or (isinstance(error, TurnCancelled) and error.reason is CancelReason.SHUTDOWN):
        return "⏹ Stopped: the daemon is shutting down. Send your message again once it is back."
    if isinstance(error, TurnCancelled):
        return "⏹ Stopped. The conversation is kept: send a message to go on."
    if isinstance(error, CLIUnavailable):
        return f"⚠️ Claude Code cannot run here: {error.message}"
    if isinstance(error, ProjectError):
        return f"⚠️ {error.message}. /project lists the projects; nothing was sent to Claude."
    if isinstance(error, LimitReached):
        return (
            f"⛔ The Claude subscription's {window_name(error.window)} is used up: it resets in "
            f"{until(error.resets_at - time.time())}. Send your message again then; nothing of this chat is lost."
        )
    if isinstance(error, UpstreamError):
        if error.status == 429:
            return f"⚠️ Anthropic is rate limiting this account: {error.message}"
        return f"⚠️ The Anthropic API failed: {error.message}"
    if isinstance(error, EngineError):
        return f"⚠️ Claude Code failed: {error.message}"
    return f"⚠️ The daemon failed: {error.message}"  # e.g. the session store could not be written
