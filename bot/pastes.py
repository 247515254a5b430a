"""A long text the Telegram app split into several messages is one prompt.

Telegram takes at most 4096 characters in a message, so the apps send a longer paste as consecutive
messages, moments apart. A text that long is held for `PASTE_WAIT` seconds; each text that follows
from the same person in the same place within that time is part of it. Then the whole is queued as
one prompt, replying to (and with the context of) its first part.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from telegram import Message, Update
from telegramify_markdown.entity import utf16_len

from bot.render import MAX_MESSAGE

PASTE_WAIT = 1.5  # seconds after a long part for the next one
SPLIT_AT = 3800  # UTF-16 units: a text this long may be the first part of a split paste

Place = tuple[int, int | None, int]  # chat, forum topic, user


@dataclass
class _Paste:
    update: Update  # the first part's
    message: Message
    parts: list[str] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None


def joined(parts: list[str]) -> str:
    """The parts as one text. A part cut at exactly the limit was cut mid-text; otherwise the app cut at
    a line or a space, which it dropped: a line break stands in for it unless the parts keep one."""
    text = parts[0]
    for before, part in itertools.pairwise(parts):
        kept = before[-1:].isspace() or part[:1].isspace() or utf16_len(before) >= MAX_MESSAGE
        text += part if kept else "\n" + part
    return text


class Pastes:
    """Texts being received in parts, by place; `send` queues a whole one (its first part's update and
    message, and the text)."""

    def __init__(self, send: Callable[[Update, Message, str], Awaitable[None]]) -> None:
        self._send = send
        self._open: dict[Place, _Paste] = {}

    def hold(self, place: Place, update: Update, message: Message, text: str) -> bool:
        """Whether the text is (part of) a paste that is not whole yet; if not, the caller goes on with it."""
        paste = self._open.get(place)
        if paste is None:
            if utf16_len(text) < SPLIT_AT:
                return False
            paste = self._open[place] = _Paste(update, message)
        elif paste.timer is not None:
            paste.timer.cancel()
        paste.parts.append(text)
        paste.timer = asyncio.create_task(self._close(place, paste))
        return True

    async def _close(self, place: Place, paste: _Paste) -> None:
        await asyncio.sleep(PASTE_WAIT)
        if self._open.get(place) is paste:
            del self._open[place]
            await self._send(paste.update, paste.message, joined(paste.parts))

    async def flush(self) -> None:
        """Queue every paste still being received at once (the daemon is going away: its chats say so)."""
        open_now, self._open = self._open, {}
        for paste in open_now.values():
            if paste.timer is not None:
                paste.timer.cancel()
            await self._send(paste.update, paste.message, joined(paste.parts))
