"""Where a chat works: its project (PROJECTS) and the Claude Code session it continues (/resume),
as a chat shows them: texts and buttons. The choosing itself is `ClaudeBot`'s (bot.app)."""

from __future__ import annotations

import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.limits_text import until
from core import SessionSummary

PROJECT_PREFIX = "project:"  # + the project's name (at most 48 bytes, see core.projects)
RESUME_PREFIX = "resume:"  # + a session id (36 characters)
SHOWN_PROMPT = 48  # characters of a session's first prompt on its button


def project_keyboard(names: list[str], current: str | None) -> InlineKeyboardMarkup:
    rows = [[InlineKeyboardButton(("✅ " if name == current else "") + name, callback_data=PROJECT_PREFIX + name)]
            for name in names]  # fmt: skip
    return InlineKeyboardMarkup(rows)


def ago(then: float, now: float | None = None) -> str:
    return f"{until((time.time() if now is None else now) - then)} ago"


def session_label(session: SessionSummary, current: bool, now: float | None = None) -> str:
    prompt = session.first_prompt
    if len(prompt) > SHOWN_PROMPT:
        prompt = prompt[: SHOWN_PROMPT - 1].rstrip() + "…"
    return ("✅ " if current else "") + f"{ago(session.modified, now)} · {prompt}"


def session_keyboard(sessions: list[SessionSummary], current: str | None) -> InlineKeyboardMarkup:
    rows = [
        [InlineKeyboardButton(session_label(s, s.session_id == current), callback_data=RESUME_PREFIX + s.session_id)]
        for s in sessions
    ]
    return InlineKeyboardMarkup(rows)
