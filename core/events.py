"""The CLI's stream-json output as typed, immutable events.

`parse_event()` is the one place a stream-json line becomes an event. Kinds we do not
use become `UnknownEvent` (logged at debug level by the caller), never an exception.
Events of subagents carry `parent_tool_use_id`; the faces show only the main thread.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SessionInit:
    session_id: str
    model: str
    cwd: str
    permission_mode: str
    version: str


@dataclass(frozen=True, slots=True)
class MessageStart:
    message_id: str
    model: str
    parent_tool_use_id: str | None
    usage: Usage = field(default_factory=lambda: Usage())


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    message_id: str
    index: int
    parent_tool_use_id: str | None


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    text: str
    message_id: str
    parent_tool_use_id: str | None


@dataclass(frozen=True, slots=True)
class StopReason:
    """The API's stop reason for one message of the turn (`message_delta`)."""

    reason: str | None
    message_id: str
    parent_tool_use_id: str | None
    usage: Usage = field(default_factory=lambda: Usage())  # the message's output so far


@dataclass(frozen=True, slots=True)
class AssistantText:
    """A finished text block. Its text also came as deltas unless the CLI fell back to a non-streaming call."""

    text: str
    message_id: str
    index: int
    model: str
    parent_tool_use_id: str | None


@dataclass(frozen=True, slots=True)
class ToolStart:
    tool_use_id: str
    name: str
    input: dict[str, Any]
    parent_tool_use_id: str | None


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool_use_id: str
    content: str
    is_error: bool
    parent_tool_use_id: str | None


@dataclass(frozen=True, slots=True)
class ApiRetry:
    attempt: int
    max_retries: int
    delay_ms: int
    error_status: int | None
    error: str


@dataclass(frozen=True, slots=True)
class LimitWindow:
    """One of the subscription's usage windows, as the CLI last reported it."""

    name: str  # five_hour, seven_day, seven_day_opus, ...
    utilization: float | None  # 0..1 (above 1 when overage is in use)
    resets_at: float | None  # epoch seconds
    status: str  # allowed, allowed_warning, rejected, or "" when the CLI did not say


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The subscription's rate-limit state (`rate_limit_event`, on subscription credentials only)."""

    status: str  # allowed, allowed_warning, rejected
    resets_at: float | None  # epoch seconds
    kind: str | None  # five_hour, seven_day, ...: the window the status is about
    windows: tuple[LimitWindow, ...] = ()
    using_overage: bool | None = None


@dataclass(frozen=True, slots=True)
class ApiError:
    """The CLI's synthetic assistant message for a failed API call."""

    status: int | None
    kind: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    def __sub__(self, other: Usage) -> Usage:
        """What is left of `self` once `other` is taken off, never below zero."""
        return Usage(
            max(0, self.input_tokens - other.input_tokens),
            max(0, self.output_tokens - other.output_tokens),
            max(0, self.cache_read_tokens - other.cache_read_tokens),
            max(0, self.cache_write_tokens - other.cache_write_tokens),
        )


@dataclass(frozen=True, slots=True)
class Result:
    subtype: str
    is_error: bool
    text: str
    session_id: str
    usage: Usage
    cost_usd: float
    num_turns: int
    duration_ms: int
    stop_reason: str | None
    terminal_reason: str | None
    api_error_status: int | None
    api_error_kind: str | None
    errors: tuple[str, ...] = ()
    model_usage: dict[str, Any] = field(default_factory=dict)
    structured_output: Any = None  # with --json-schema: the answer, checked against the schema by the CLI
    denials: tuple[tuple[str, dict[str, Any]], ...] = ()  # tool calls refused (name, input): a person, the mode


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """The CLI asks its host something and waits for a `control_response` (e.g. `can_use_tool`)."""

    request_id: str
    subtype: str
    body: dict[str, Any]  # the request itself: tool_name, input, permission_suggestions, ...


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    kind: str
    raw: dict[str, Any]


Event = (
    SessionInit
    | MessageStart
    | TextDelta
    | ThinkingDelta
    | StopReason
    | AssistantText
    | ToolStart
    | ToolResult
    | ApiRetry
    | RateLimit
    | ApiError
    | Result
    | ControlRequest
    | UnknownEvent
)


class NotJSON(ValueError):
    """A stdout line that is not a JSON object."""


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return "" if content is None else str(content)


def _usage(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        cache_read_tokens=int(raw.get("cache_read_input_tokens") or 0),
        cache_write_tokens=int(raw.get("cache_creation_input_tokens") or 0),
    )


def _stream_event(raw: dict[str, Any]) -> list[Event]:
    inner = raw.get("event") or {}
    kind = inner.get("type")
    parent = raw.get("parent_tool_use_id")
    message_id = raw.get("api_message_id") or ""
    if kind == "content_block_delta":
        delta = inner.get("delta") or {}
        if delta.get("type") == "text_delta":
            return [TextDelta(delta.get("text", ""), message_id, int(inner.get("index", 0)), parent)]
        if delta.get("type") == "thinking_delta":
            return [ThinkingDelta(delta.get("thinking", ""), message_id, parent)]
    elif kind == "message_start":
        message = inner.get("message") or {}
        return [
            MessageStart(message.get("id", message_id), message.get("model", ""), parent, _usage(message.get("usage")))
        ]
    elif kind == "message_delta":
        output = Usage(output_tokens=int((inner.get("usage") or {}).get("output_tokens") or 0))
        return [StopReason((inner.get("delta") or {}).get("stop_reason"), message_id, parent, output)]
    return [UnknownEvent(f"stream_event/{kind}", raw)]


def _assistant(raw: dict[str, Any]) -> list[Event]:
    message = raw.get("message") or {}
    content = message.get("content") or []
    if raw.get("is_api_error_message") or (raw.get("error") and message.get("model") == "<synthetic>"):
        text = " ".join(block.get("text", "") for block in content if block.get("type") == "text")
        return [ApiError(raw.get("api_error_status"), raw.get("api_error_type") or raw.get("error"), text)]
    parent = raw.get("parent_tool_use_id")
    events: list[Event] = []
    for index, block in enumerate(content):
        kind = block.get("type")
        if kind == "text":
            events.append(
                AssistantText(block.get("text", ""), message.get("id", ""), index, message.get("model", ""), parent)
            )
        elif kind == "tool_use":
            events.append(ToolStart(block.get("id", ""), block.get("name", ""), block.get("input") or {}, parent))
    return events


def _user(raw: dict[str, Any]) -> list[Event]:
    content = (raw.get("message") or {}).get("content")
    if not isinstance(content, list):
        return [UnknownEvent("user", raw)]
    parent = raw.get("parent_tool_use_id")
    return [
        ToolResult(
            block.get("tool_use_id", ""), _tool_result_text(block.get("content")), bool(block.get("is_error")), parent
        )
        for block in content
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ] or [UnknownEvent("user", raw)]


def _turn_cost(raw: dict[str, Any]) -> float:
    """This turn's cost. `total_cost_usd` adds up the whole resumed session; the per-model usage since
    the last result is the turn's own: empty for a turn that reached no model (a failed or refused
    one), which costs nothing rather than the session's total again. Only a CLI that does not send it
    at all has its total taken."""
    since = raw.get("model_usage_since_last_result")
    if isinstance(since, dict):
        return float(sum(float(m.get("costUSD") or 0.0) for m in since.values() if isinstance(m, dict)))
    return float(raw.get("total_cost_usd") or 0.0)


def _result(raw: dict[str, Any]) -> Result:
    return Result(
        subtype=raw.get("subtype", ""),
        is_error=bool(raw.get("is_error")),
        text=raw.get("result") or "",
        session_id=raw.get("session_id", ""),
        usage=_usage(raw.get("usage")),
        cost_usd=_turn_cost(raw),
        num_turns=int(raw.get("num_turns") or 0),
        duration_ms=int(raw.get("duration_ms") or 0),
        stop_reason=raw.get("stop_reason"),
        terminal_reason=raw.get("terminal_reason"),
        api_error_status=raw.get("api_error_status"),
        api_error_kind=raw.get("api_error_type") or raw.get("api_error"),
        errors=tuple(str(e) for e in raw.get("errors") or ()),
        model_usage=raw.get("modelUsage") or {},
        structured_output=raw.get("structured_output"),
        denials=_denials(raw.get("permission_denials")),
    )


def _denials(value: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        (str(d.get("tool_name") or "a tool"), d["tool_input"] if isinstance(d.get("tool_input"), dict) else {})
        for d in value
        if isinstance(d, dict)
    )


def _number(value: Any) -> float | None:
    """A finite number, or None (for a field that is missing or not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _window(name: str, window: dict[str, Any]) -> LimitWindow:
    status = window.get("status")
    return LimitWindow(
        name,
        _number(window.get("utilization")),
        _number(window.get("resetsAt")),
        status if isinstance(status, str) else "",
    )


def _rate_limit(raw: dict[str, Any]) -> RateLimit:
    """Every field the CLI sends that we understand; missing, mistyped or unknown ones are left out."""
    info = raw["rate_limit_info"] if isinstance(raw.get("rate_limit_info"), dict) else {}
    windows = info["unifiedWindows"] if isinstance(info.get("unifiedWindows"), dict) else {}
    kind = info.get("rateLimitType") if isinstance(info.get("rateLimitType"), str) else None
    found = [_window(str(name), window) for name, window in windows.items() if isinstance(window, dict)]
    if kind and kind not in windows and _number(info.get("utilization")) is not None:
        found.append(_window(kind, info))
    overage = info.get("isUsingOverage")
    return RateLimit(
        str(info.get("status") or ""), _number(info.get("resetsAt")), kind, tuple(found),
        overage if isinstance(overage, bool) else None,
    )  # fmt: skip


def parse_event(line: bytes | str) -> list[Event]:
    """Parse one stdout line into zero or more events (an assistant message may hold several blocks)."""
    try:
        raw = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotJSON(str(exc)) from exc
    if not isinstance(raw, dict):
        raise NotJSON("not a JSON object")
    kind = raw.get("type")
    if kind == "stream_event":
        return _stream_event(raw)
    if kind == "assistant":
        return _assistant(raw)
    if kind == "user":
        return _user(raw)
    if kind == "result":
        return [_result(raw)]
    if kind == "control_request":
        request = raw["request"] if isinstance(raw.get("request"), dict) else {}
        return [ControlRequest(str(raw.get("request_id") or ""), str(request.get("subtype") or ""), request)]
    if kind == "rate_limit_event":
        return [_rate_limit(raw)]
    if kind == "system":
        subtype = raw.get("subtype")
        if subtype == "init":
            return [
                SessionInit(
                    raw.get("session_id", ""),
                    raw.get("model", ""),
                    raw.get("cwd", ""),
                    raw.get("permissionMode", ""),
                    raw.get("claude_code_version", ""),
                )
            ]
        if subtype == "api_retry":
            return [
                ApiRetry(
                    int(raw.get("attempt") or 0),
                    int(raw.get("max_retries") or 0),
                    int(raw.get("retry_delay_ms") or 0),
                    raw.get("error_status"),
                    str(raw.get("error") or ""),
                )
            ]
        return [UnknownEvent(f"system/{subtype}", raw)]
    return [UnknownEvent(str(kind), raw)]
