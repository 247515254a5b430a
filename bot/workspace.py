"""Where a chat works: its project (PROJECTS), the Claude Code session it continues (/resume) and its
model (/model), as a chat shows them: texts and buttons. The choosing itself is bot.choices'."""

from __future__ import annotations

import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.limits_text import since
from core import SessionSummary

PROJECT_PREFIX = "project:"  # + the project's name (at most 48 bytes, see core.projects)
RESUME_PREFIX = "resume:"  # + a session id (36 characters)
MODEL_PREFIX = "model:"  # + a model name, or "default"
SHOWN_PROMPT = 48  # characters of a session's first prompt on its button


def project_keyboard(names: list[str], current: str | None) -> InlineKeyboardMarkup:
    rows = [[InlineKeyboardButton(("✅ " if name == current else "") + name, callback_data=PROJECT_PREFIX + name)]
            for name in names]  # fmt: skip
    return InlineKeyboardMarkup(rows)


def ago(then: float, now: float | None = None) -> str:
    seconds = (time.time() if now is None else now) - then
    return "just now" if seconds < 60 else f"{since(seconds)} ago"


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


def model_keyboard(names: list[str], current: str | None) -> InlineKeyboardMarkup:
    """One button per model (an alias longer than Telegram's 64-byte button data is left to `/model NAME`),
    and one for the default; the chat's choice is ticked."""
    fits = [n for n in names if len((MODEL_PREFIX + n).encode()) <= 64]
    buttons = [InlineKeyboardButton(("✅ " if n == current else "") + n, callback_data=MODEL_PREFIX + n) for n in fits]
    rows = [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
    rows.append(
        [InlineKeyboardButton(("✅ " if not current else "") + "default", callback_data=MODEL_PREFIX + "default")]
    )
    return InlineKeyboardMarkup(rows)
