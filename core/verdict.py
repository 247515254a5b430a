"""The verdict on a turn: how a CLI result or exit becomes an error, and the outcome it is counted as.

This is the one place a CLI failure is translated into an `EngineError`; the faces
translate those errors, each in its own single table.
"""

from __future__ import annotations

import asyncio

from core.errors import (
    ActivityTimeout,
    CLIUnavailable,
    EngineError,
    LimitReached,
    Saturated,
    SessionNotFound,
    ShuttingDown,
    TurnCancelled,
    TurnFailed,
    UpstreamError,
)
from core.events import Result

# The values of a turn's `outcome` (a metric label, so a fixed set).
OUTCOMES = (
    "ok", "error_max_turns", "cancelled", "timeout", "failed", "upstream_error", "not_logged_in",
    "saturated", "unavailable", "shutting_down", "limit_reached", "error",
)  # fmt: skip

_NOT_LOGGED_IN = ("not logged in", "please run /login", "invalid api key")
_ROOT_REFUSED = "cannot be used with root/sudo privileges"
_SESSION_UNKNOWN = "No conversation found"


def outcome_of(exc: BaseException) -> str:
    """The outcome of a turn that ended in `exc`."""
    if isinstance(exc, (asyncio.CancelledError, ConnectionError, TurnCancelled)):
        return "cancelled"
    kinds: list[tuple[type[BaseException], str]] = [
        (ActivityTimeout, "timeout"), (Saturated, "saturated"), (ShuttingDown, "shutting_down"),
        (CLIUnavailable, "unavailable"), (LimitReached, "limit_reached"), (UpstreamError, "upstream_error"),
        (TurnFailed, "failed"),
    ]  # fmt: skip
    return next((outcome for kind, outcome in kinds if isinstance(exc, kind)), "error")


def truncated(result: Result) -> bool:
    """A limit cut the answer short: the output tokens, or the turns Claude may take (CLAUDE_MAX_TURNS)."""
    return (
        result.stop_reason == "max_tokens"
        or result.subtype == "error_max_turns"
        or result.api_error_kind == "max_output_tokens"
    )


def session_unknown(result: Result) -> bool:
    return any(_SESSION_UNKNOWN in error for error in result.errors)


def result_outcome(result: Result) -> str:
    """The outcome of a turn whose result is not a failure (see `result_error`)."""
    if not result.is_error:
        return "ok"
    return result.subtype if result.subtype in OUTCOMES else "failed"


def result_error(
    result: Result, *, session_id: str | None, retry_after: int | None, stderr: str
) -> tuple[str, EngineError] | None:
    """(outcome, error) when the result is a failure; an answer cut by a limit is not one."""
    if not result.is_error or result.api_error_kind == "max_output_tokens" or result.subtype == "error_max_turns":
        return None
    if session_unknown(result):
        return "failed", SessionNotFound("; ".join(result.errors), session_id=session_id)
    if result.terminal_reason == "api_error" or result.api_error_status:
        if result.api_error_status is None and any(m in result.text.lower() for m in _NOT_LOGGED_IN):
            message = f"the Claude Code CLI is not logged in: {result.text}"
            return "not_logged_in", CLIUnavailable(message, session_id=session_id)
        error = UpstreamError(
            result.text or "the Anthropic API failed",
            status=result.api_error_status,
            kind=result.api_error_kind,
            session_id=session_id,
            retry_after=retry_after,
        )
        return "upstream_error", error
    detail = "; ".join(result.errors) or result.text or result.subtype
    return "failed", TurnFailed(f"the Claude Code CLI failed: {detail}", session_id=session_id, stderr=stderr)


def exit_error(code: int | None, stderr: str, *, session_id: str | None) -> EngineError:
    """The error of a CLI that exited without a result."""
    if _SESSION_UNKNOWN in stderr:
        return SessionNotFound(stderr, session_id=session_id, stderr=stderr)
    if _ROOT_REFUSED in stderr:
        return CLIUnavailable(
            "the Claude Code CLI refuses bypassPermissions as root; set IS_SANDBOX=1 in its environment "
            "or choose another CLAUDE_PERMISSION_MODE",
            stderr=stderr,
        )
    if any(marker in stderr.lower() for marker in _NOT_LOGGED_IN):
        return CLIUnavailable(f"the Claude Code CLI is not logged in: {stderr}", stderr=stderr)
    detail = stderr.splitlines()[-1] if stderr else "no output on stderr"
    return TurnFailed(
        f"the Claude Code CLI exited with status {code} without an answer: {detail}",
        session_id=session_id,
        stderr=stderr,
    )
