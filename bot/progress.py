"""What the chat sees while a turn runs: one status message, a typing indicator, a draft.

The status message lists the tools Claude runs and how long the turn has taken, with a
Stop button. It is edited at most every `interval` seconds and never with the text it
already has; flood control pauses the edits (the final answer does not depend on them).
In private chats the answer streams as a draft (sendMessageDraft), formatted; where drafts fail,
the status message shows the end of the answer so far instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ChatAction
from telegram.error import BadRequest, RetryAfter, TelegramError

from bot.calls import TYPING_EVERY, is_not_modified, retry_after_seconds, send
from bot.render import Chunk, draft, joined
from core import ToolActivity, format_duration

log = logging.getLogger("bot.progress")

STOP_DATA = "stop"
DRAFT_EVERY = 1.0
TICK = 0.25
SHOWN_TOOLS = 6
PREVIEW_CHARS = 600
_draft_ids = itertools.count(1)


def stop_keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("⏹ Stop", callback_data=STOP_DATA)]])


@dataclass
class Progress:
    """The live state of a turn as shown in its chat."""

    bot: Bot
    chat_id: int
    interval: float
    private: bool
    reply_to: int | None = None
    thread_id: int | None = None  # the forum topic the turn came from
    started: float = field(default_factory=time.monotonic)
    tools: list[str] = field(default_factory=list)  # each call described, in order
    tool_names: list[str] = field(default_factory=list)  # the same calls, by tool name
    waiting_for_slot: bool = False
    approval: str = ""  # the tool call waiting for a person's approval, described
    withdrawn: str = ""  # the call whose prompt a stop withdrew, described
    queued: int = 0
    answer: str = ""
    message_id: int | None = None
    drafts: bool = True
    _shown: Chunk = field(default_factory=lambda: Chunk(""))
    _last_edit: float = 0.0
    _paused_until: float = 0.0
    _draft_id: int = field(default_factory=lambda: next(_draft_ids))
    _draft_shown: str = ""
    _writing: bool = False  # text came after the last tool call
    _task: asyncio.Task[None] | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def doing(self) -> str:
        """What the turn is doing right now, in a few words."""
        if self.approval:
            return f"waiting for approval: {self.approval}"
        if self.waiting_for_slot:
            return "waiting for a free Claude Code slot"
        if self._writing:
            return "writing the answer"
        return self.tools[-1] if self.tools else "thinking"

    def tool(self, activity: ToolActivity) -> None:
        self.waiting_for_slot = False
        self._writing = False
        self.tool_names.append(activity.name)
        self.tools.append(activity.description)

    def write(self, text: str) -> None:
        self.answer += text
        self._writing = True

    def render(self) -> Chunk:
        lines = [f"⏳ Working · {format_duration(self.elapsed)}"]
        hidden = len(self.tools) - SHOWN_TOOLS
        if hidden > 0:
            lines.append(f"… {hidden} earlier step{'s' if hidden > 1 else ''}")
        lines += self.tools[-SHOWN_TOOLS:]
        if self.approval:
            lines.append(f"🔐 waiting for approval: {self.approval}")
        if self.waiting_for_slot:
            lines.append("⏳ waiting for a free Claude Code slot")
        if self.queued:
            lines.append(f"📥 {self.queued} message{'s' if self.queued > 1 else ''} queued")
        status = Chunk("\n".join(lines))
        if self.answer.strip() and not (self.private and self.drafts):  # the end of the answer so far, formatted
            preview = draft(self.answer, PREVIEW_CHARS)
            if preview.text:
                return joined(status, preview, "\n\n…" if len(self.answer) > PREVIEW_CHARS else "\n\n")
        return status

    async def start(self) -> None:
        message = await send(
            "status",
            lambda: self.bot.send_message(
                self.chat_id, self.render().text, reply_markup=stop_keyboard(), message_thread_id=self.thread_id,
                reply_to_message_id=self.reply_to, allow_sending_without_reply=True,
            ),
        )  # fmt: skip
        if message is not None:
            self.message_id = message.message_id
            self._shown = Chunk(message.text or "")
            self._last_edit = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        last_typing = last_draft = 0.0
        while True:
            now = time.monotonic()
            if now - last_typing >= TYPING_EVERY:
                last_typing = now
                with contextlib.suppress(TelegramError):
                    await self.bot.send_chat_action(self.chat_id, ChatAction.TYPING, message_thread_id=self.thread_id)
            if self.private and self.drafts and self.answer and now - last_draft >= DRAFT_EVERY:
                last_draft = now
                await self._draft()
            if now - self._last_edit >= self.interval:
                await self._edit(self.render(), stop_keyboard())
            await asyncio.sleep(TICK)

    async def _draft(self) -> None:
        if self.answer == self._draft_shown:
            return
        shown = draft(self.answer)  # formatted as the answer will be, so the draft does not jump at the end
        if not shown.text:
            return
        try:
            await self.bot.send_message_draft(
                self.chat_id, self._draft_id, text=shown.text, entities=shown.entities, message_thread_id=self.thread_id
            )
            self._draft_shown = self.answer
        except TelegramError as exc:  # any failure: fall back to the preview in the status message
            log.info("draft_unavailable chat=%s error=%s", self.chat_id, exc)
            self.drafts = False

    async def _edit(self, view: Chunk, markup: InlineKeyboardMarkup | None, *, final: bool = False) -> bool:
        now = time.monotonic()
        if self.message_id is None or (not final and now < self._paused_until):
            return False
        if view.text.rstrip() == self._shown.text.rstrip() and view.entities == self._shown.entities and not final:
            return False
        self._last_edit = now
        try:
            await self.bot.edit_message_text(
                view.text, self.chat_id, self.message_id, reply_markup=markup, entities=view.entities or None
            )
            self._shown = view
            return True
        except RetryAfter as exc:
            self._paused_until = now + retry_after_seconds(exc)
            log.info("status_edit_flood chat=%s retry_after=%.0f", self.chat_id, retry_after_seconds(exc))
        except BadRequest as exc:
            if not is_not_modified(exc):  # the message is gone or cannot be edited: stop editing it
                log.info("status_edit_refused chat=%s error=%s", self.chat_id, exc.message)
                self.message_id = None
        except TelegramError as exc:
            log.info("status_edit_failed chat=%s error=%s", self.chat_id, exc)
        return False

    async def stop(self) -> None:
        """Stop updating the status message (and the typing, the draft)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def finish(self, summary: str, *, shown_below: bool) -> None:
        """The turn is over: the status message goes when its summary was sent below the answer (so the turn
        reads top to bottom); otherwise it becomes the one-line summary."""
        await self.stop()
        if self.message_id is None:
            return
        message_id = self.message_id
        if shown_below and await send("status_delete", lambda: self.bot.delete_message(self.chat_id, message_id)):
            self.message_id = None
            return
        wait = self._paused_until - time.monotonic()
        if wait > 0:  # flood control: wait a little for the summary, but never hold the next turn long
            await asyncio.sleep(min(wait, 5))
        if not await self._edit(Chunk(summary), None, final=True) and self.message_id is not None:
            await send("status_summary", lambda: self.bot.edit_message_text(summary, self.chat_id, message_id))
