"""Short, safe descriptions of what Claude is doing, for progress shown to people."""

from __future__ import annotations

import re
from typing import Any

_SECRETS = re.compile(r"(?i)(bearer\s+|(?:token|key|secret|password)[=:]\s*)\S+|sk-[A-Za-z0-9_-]{8,}")
_TOOL_ICONS = {"Bash": "💻", "Read": "📄", "Edit": "✏️", "Write": "📝", "Grep": "🔎", "Glob": "🔎", "WebFetch": "🌐",
               "WebSearch": "🌐", "Task": "🤖", "Agent": "🤖", "TodoWrite": "📋"}  # fmt: skip
_TOOL_FIELDS = ("command", "file_path", "notebook_path", "path", "pattern", "url", "query", "description", "prompt")


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def describe_tool(name: str, tool_input: dict[str, Any], limit: int = 80) -> str:
    """A one-line, shortened, secret-masked summary of a tool call: the command, the file, the query."""
    detail = ""
    for key in _TOOL_FIELDS:
        value = tool_input.get(key)
        if isinstance(value, str) and value.strip():
            detail = value
            break
    where = tool_input.get("path")
    if name in ("Grep", "Glob") and isinstance(tool_input.get("pattern"), str):
        # What is searched for says what Claude is doing; where, only after it.
        detail = str(tool_input["pattern"]) + (f" in {where}" if isinstance(where, str) and where.strip() else "")
    detail = _SECRETS.sub(lambda m: (m.group(1) or "") + "***", " ".join(detail.split()))
    if len(detail) > limit:
        detail = detail[: limit - 1] + "…"
    icon = _TOOL_ICONS.get(name, "🔧")
    return f"{icon} {name}: {detail}" if detail else f"{icon} {name}"
