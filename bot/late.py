"""Messages that waited while the daemon was down: asked about, not run as if just sent.

Telegram keeps what a user sends while the bot is not polling and delivers it when polling starts.
A prompt from hours ago ("deploy now") may no longer be meant, so the chat is asked first.
"""

from __future__ import annotations

import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.limits_text import since

LATE_PREFIX = "late:"  # + "run:" or "skip:" + the message's id
LATE_AFTER = 60.0  # seconds: a message older than this that was sent before the bot started is asked about


def waited(message: Message, started_at: float, now: float | None = None) -> float | None:
    """How long the message waited for the bot, if it was sent while the bot was down (else None)."""
    sent = message.date.timestamp()
    age = (time.time() if now is None else now) - sent
    return age if sent < started_at and age > LATE_AFTER else None


def late_question(seconds: float) -> str:
    return f"📬 This message waited {since(seconds)} while I was offline. Run it now?"


def late_keyboard(message_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton("▶️ Run it", callback_data=f"{LATE_PREFIX}run:{message_id}"),
          InlineKeyboardButton("✖️ Skip", callback_data=f"{LATE_PREFIX}skip:{message_id}")]]
    )  # fmt: skip
