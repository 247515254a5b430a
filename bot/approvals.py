"""Permission prompts in Telegram: a message saying what would run, with Allow / Always allow / Deny.

The bot registers this desk with the engine's `Approvals`. A Telegram turn's prompt goes to
its own chat; an HTTP turn's to TELEGRAM_NOTIFY_ID (none set: denied at once, saying how to
enable approvals). A press is taken only from an allowed user (the bot's gate) and only for
a prompt still pending; afterwards the message says what was decided and by whom.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, User

from bot.calls import send
from core import Approvals, Decision, PermissionPrompt, Settings

log = logging.getLogger("bot.approvals")

PREFIX = "perm"
SHOWN_CHARS = 2500  # of a command, diff or input: the message stays well inside Telegram's 4096
NO_NOTIFY_CHAT = (
    "Nobody can approve this: HTTP turns are approved in Telegram's TELEGRAM_NOTIFY_ID chat, and none is set "
    "(set it, or PROXY_PERMISSION_MODE to a mode that does not ask)."
)
_CHOICES = {"a": "allow", "A": "always", "d": "deny"}


def _cut(text: str, limit: int = SHOWN_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit:,} more characters not shown)"


def _diff(old: str, new: str) -> str:
    lines = [f"- {line}" for line in old.splitlines()] + [f"+ {line}" for line in new.splitlines()]
    return "\n".join(lines)


def what_would_run(tool: str, tool_input: dict[str, Any]) -> str:
    """The tool call, readably: the command, the file and its change, the URL, or the input."""
    if tool == "Bash":
        command = str(tool_input.get("command") or "")
        about = str(tool_input.get("description") or "")
        return f"Run this command:\n{_cut(command)}" + (f"\n\n({about})" if about else "")
    path = str(tool_input.get("file_path") or tool_input.get("notebook_path") or "")
    if tool == "Edit":
        change = _diff(str(tool_input.get("old_string") or ""), str(tool_input.get("new_string") or ""))
        return f"Edit {path}:\n{_cut(change)}"
    if tool == "MultiEdit":
        edits: list[Any] = tool_input["edits"] if isinstance(tool_input.get("edits"), list) else []
        change = "\n…\n".join(
            _diff(str(e.get("old_string") or ""), str(e.get("new_string") or "")) for e in edits if isinstance(e, dict)
        )
        return f"Edit {path} ({len(edits)} changes):\n{_cut(change)}"
    if tool == "Write":
        content = str(tool_input.get("content") or "")
        return f"Write {path} ({len(content):,} characters):\n{_cut(content)}"
    if tool == "NotebookEdit":
        return f"Edit the notebook {path}:\n{_cut(str(tool_input.get('new_source') or ''))}"
    if tool == "WebFetch":
        return f"Fetch {tool_input.get('url') or ''}"
    return f"Use {tool}:\n{_cut(json.dumps(tool_input, ensure_ascii=False, indent=1))}"


def prompt_text(prompt: PermissionPrompt) -> str:
    origin = "" if prompt.face == "telegram" else f"\n\nFrom an HTTP client, conversation {prompt.key}."
    return f"🔐 Claude Code asks to use {prompt.tool}.\n\n{what_would_run(prompt.tool, prompt.input)}{origin}"


def keyboard(prompt: PermissionPrompt) -> InlineKeyboardMarkup:
    buttons = [InlineKeyboardButton("✅ Allow", callback_data=f"{PREFIX}:{prompt.id}:a")]
    if prompt.suggestions:
        buttons.append(InlineKeyboardButton("♾ Always allow", callback_data=f"{PREFIX}:{prompt.id}:A"))
    buttons.append(InlineKeyboardButton("❌ Deny", callback_data=f"{PREFIX}:{prompt.id}:d"))
    return InlineKeyboardMarkup([buttons])


def verdict(decision: Decision) -> str:
    if decision.allow:
        return f"{'♾ Always allowed' if decision.always else '✅ Allowed'} by {decision.by}."
    if decision.by == "timeout":
        return f"⏱ Denied: {decision.message}"
    if decision.by == "stop":
        return f"⏹ Withdrawn: {decision.message}"
    return f"❌ Denied by {decision.by}."


def person(user: User | None) -> str:
    if user is None:
        return "someone"
    return user.full_name or (f"@{user.username}" if user.username else str(user.id))


class ApprovalDesk:
    def __init__(self, bot: Bot, approvals: Approvals, settings: Settings) -> None:
        self._bot = bot
        self._approvals = approvals
        self._settings = settings
        self._shown: dict[str, tuple[int, int, str]] = {}  # prompt id -> (chat, message id, text)

    def chat_for(self, prompt: PermissionPrompt) -> int | None:
        if prompt.face == "telegram" and prompt.key.startswith("tg:"):
            return int(prompt.key.removeprefix("tg:"))
        return self._settings.telegram_notify_id

    async def show(self, prompt: PermissionPrompt) -> None:
        chat = self.chat_for(prompt)
        if chat is None:
            self._approvals.decide(prompt.id, Decision(False, "no approver", NO_NOTIFY_CHAT))
            return
        text = prompt_text(prompt)
        message = await send(
            "permission_prompt", lambda: self._bot.send_message(chat, text, reply_markup=keyboard(prompt))
        )
        if message is None:
            self._approvals.decide(prompt.id, Decision(False, "error", "The approval prompt could not be shown."))
            return
        self._shown[prompt.id] = (chat, message.message_id, text)

    async def resolved(self, prompt: PermissionPrompt, decision: Decision) -> None:
        shown = self._shown.pop(prompt.id, None)
        if shown is None:
            return
        chat, message_id, text = shown
        await send(
            "permission_decided",
            lambda: self._bot.edit_message_text(f"{text}\n\n{verdict(decision)}", chat, message_id),
        )
        if decision.by == "timeout":
            await send(
                "permission_timeout",
                lambda: self._bot.send_message(
                    chat, f"⏱ Nobody answered the prompt for {prompt.tool}: denied.", reply_to_message_id=message_id,
                    allow_sending_without_reply=True,
                ),
            )  # fmt: skip

    def press(self, data: str, user: User | None) -> str:
        """A button of a prompt was pressed; the toast to show."""
        _, _, rest = data.partition(":")
        prompt_id, _, choice = rest.partition(":")
        action = _CHOICES.get(choice)
        if action is None or self._approvals.pending(prompt_id) is None:
            return "This prompt is no longer waiting."
        who = person(user)
        decision = Decision(action != "deny", who, "" if action != "deny" else f"Denied by {who}.", action == "always")
        if not self._approvals.decide(prompt_id, decision):
            return "This prompt is no longer waiting."
        return {"allow": "Allowed", "always": "Always allowed", "deny": "Denied"}[action]
