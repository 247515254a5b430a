"""Permission prompts in Telegram: a message saying what would run, with Allow / Always allow / Deny.

The bot registers this desk with the engine's `Approvals`. A Telegram turn's prompt goes to
its own chat; an HTTP turn's to TELEGRAM_NOTIFY_ID (none set: denied at once, saying how to
enable approvals). A press is taken only from an allowed user (the bot's gate) and only for
a prompt still pending; afterwards the message says what was decided and by whom.

Two tools are questions rather than permissions: Claude's `AskUserQuestion` shows each
question with its options as buttons (and "Other", a typed answer), and the answers go back
in the tool's input; `ExitPlanMode` shows the plan with Approve / Keep planning. "Deny with
a reason" takes the next message typed in the chat as what Claude is told.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, User
from telegramify_markdown.entity import utf16_len

from bot.calls import send
from bot.chat import place_of
from bot.render import render, utf16_head
from core import PLAN_TOOL, QUESTION_TOOL, Approvals, Decision, PermissionPrompt, Settings

log = logging.getLogger("bot.approvals")

PREFIX = "perm"
SHOWN_CHARS = 2500  # of a command, diff or input: the message stays well inside Telegram's 4096
NO_NOTIFY_CHAT = (
    "Nobody can approve this: HTTP turns are approved in Telegram's TELEGRAM_NOTIFY_ID chat, and none is set "
    "(set it, or PROXY_PERMISSION_MODE to a mode that does not ask)."
)


def _cut(text: str, limit: int = SHOWN_CHARS) -> str:
    """At most `limit` UTF-16 units of text (Telegram's measure: an emoji counts two), with a note of the rest."""
    if utf16_len(text) <= limit:
        return text
    head = utf16_head(text, limit)
    return f"{head}\n… ({len(text) - len(head):,} more characters not shown)"


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


def _questions(prompt: PermissionPrompt) -> list[dict[str, Any]]:
    questions = prompt.input.get("questions")
    return [q for q in questions if isinstance(q, dict)] if isinstance(questions, list) else []


def _options(question: dict[str, Any]) -> list[str]:
    options: list[Any] = question["options"] if isinstance(question.get("options"), list) else []
    return [str(o.get("label") or "") for o in options if isinstance(o, dict)]


@dataclass
class Shown:
    """A prompt on screen, and what the person has chosen so far."""

    prompt: PermissionPrompt
    chat: int
    thread_id: int | None = None  # the forum topic the turn came from
    message_id: int = 0
    text: str = ""
    entities: tuple[MessageEntity, ...] = ()
    question: int = 0  # of AskUserQuestion's questions, the one shown
    answers: dict[str, str] = field(default_factory=dict)
    picked: list[str] = field(default_factory=list)  # options ticked of a multiple-choice question

    @property
    def kind(self) -> str:
        return {QUESTION_TOOL: "question", PLAN_TOOL: "plan"}.get(self.prompt.tool, "tool")

    def data(self, action: str) -> str:
        return f"{PREFIX}:{self.prompt.id}:{action}"

    @property
    def questions(self) -> list[dict[str, Any]]:
        return _questions(self.prompt)

    @property
    def current(self) -> dict[str, Any]:
        """The question of AskUserQuestion on screen ({} past the last)."""
        questions = self.questions
        return questions[self.question] if self.question < len(questions) else {}

    def body(self) -> tuple[str, tuple[MessageEntity, ...]]:
        prompt, origin = self.prompt, ""
        if prompt.face != "telegram":
            origin = f"\n\nFrom an HTTP client, conversation {prompt.key}."
        if self.kind == "question":
            questions, question = self.questions, self.current
            count = f" ({self.question + 1} of {len(questions)})" if len(questions) > 1 else ""
            lines = [f"❓ Claude asks{count}:", "", _cut(str(question.get("question") or ""), 1000)]
            for option in question.get("options") or ():
                if isinstance(option, dict):
                    label, about = str(option.get("label") or ""), str(option.get("description") or "")
                    lines.append(f"• {_cut(label, 100)}: {_cut(about, 300)}")
            return "\n".join(lines) + origin, ()
        if self.kind == "plan":
            chunks = render(str(prompt.input.get("plan") or ""), limit=SHOWN_CHARS)
            head = "📋 Claude's plan, for your approval:\n\n"
            if not chunks:
                return head + "(empty)" + origin, ()
            offset = len(head.encode("utf-16-le")) // 2
            entities = tuple(
                MessageEntity(e.type, e.offset + offset, e.length, url=e.url, language=e.language)
                for e in chunks[0].entities
            )
            more = "\n… (the rest of the plan is not shown)" if len(chunks) > 1 else ""
            return head + chunks[0].text + more + origin, entities
        return f"🔐 Claude Code asks to use {prompt.tool}.\n\n{what_would_run(prompt.tool, prompt.input)}{origin}", ()

    def keyboard(self) -> InlineKeyboardMarkup:
        if self.kind == "question":
            question = self.current
            multiple = bool(question.get("multiSelect"))
            rows = [
                [
                    InlineKeyboardButton(
                        ("☑️ " if label in self.picked else "") + label[:60], callback_data=self.data(f"o{i}")
                    )
                ]
                for i, label in enumerate(_options(question))
            ]
            last = [InlineKeyboardButton("✍️ Other (type it)", callback_data=self.data("t"))]
            if multiple:
                last.insert(0, InlineKeyboardButton("✅ Done", callback_data=self.data("s")))
            last.append(InlineKeyboardButton("Skip", callback_data=self.data("d")))
            return InlineKeyboardMarkup([*rows, last])
        if self.kind == "plan":
            return InlineKeyboardMarkup([[
                InlineKeyboardButton("✅ Approve", callback_data=self.data("a")),
                InlineKeyboardButton("✏️ Keep planning", callback_data=self.data("d")),
            ]])  # fmt: skip
        buttons = [InlineKeyboardButton("✅ Allow", callback_data=self.data("a"))]
        if self.prompt.suggestions:
            buttons.append(InlineKeyboardButton("♾ Always allow", callback_data=self.data("A")))
        buttons.append(InlineKeyboardButton("❌ Deny", callback_data=self.data("d")))
        return InlineKeyboardMarkup(
            [buttons, [InlineKeyboardButton("💬 Deny with a reason", callback_data=self.data("r"))]]
        )


def verdict(shown: Shown, decision: Decision) -> str:
    if decision.by == "timeout":
        return f"⏱ Denied: {decision.message}"
    if decision.by == "stop":
        return "⏹ Withdrawn: the turn was stopped."
    if shown.kind == "question":
        if not decision.allow:
            return f"Skipped by {decision.by}."
        return "\n".join(f"✅ {q}: {a}" for q, a in shown.answers.items()) + f"\n(answered by {decision.by})"
    if shown.kind == "plan":
        return f"✅ Approved by {decision.by}." if decision.allow else f"✏️ {decision.by} asked to keep planning."
    if decision.allow:
        return f"{'♾ Always allowed' if decision.always else '✅ Allowed'} by {decision.by}."
    message = decision.message or f"Denied by {decision.by}."
    if message.startswith(f"Denied by {decision.by}"):  # a reason typed by the person reads "Denied by X: why"
        return f"❌ {message}"
    return f"❌ Denied by {decision.by}: {message}"


def person(user: User | None) -> str:
    if user is None:
        return "someone"
    return user.full_name or (f"@{user.username}" if user.username else str(user.id))


class ApprovalDesk:
    def __init__(self, bot: Bot, approvals: Approvals, settings: Settings) -> None:
        self._bot = bot
        self._approvals = approvals
        self._settings = settings
        self._shown: dict[str, Shown] = {}
        self._typing: dict[int, tuple[str, str]] = {}  # chat -> (prompt id, "other" or "reason"): the next text

    def place_for(self, prompt: PermissionPrompt) -> tuple[int | None, int | None]:
        """(chat, forum topic) a prompt is shown in: its turn's own, else the notify chat."""
        own = place_of(prompt.key, prompt.face)
        return own if own is not None else (self._settings.telegram_notify_id, None)

    async def show(self, prompt: PermissionPrompt) -> None:
        chat, thread = self.place_for(prompt)
        if chat is None:
            self._approvals.decide(prompt.id, Decision(False, "no approver", NO_NOTIFY_CHAT))
            return
        shown = Shown(prompt, chat, thread)
        shown.text, shown.entities = shown.body()
        message = await send(
            "permission_prompt",
            lambda: self._bot.send_message(
                chat,
                shown.text,
                entities=shown.entities or None,
                reply_markup=shown.keyboard(),
                message_thread_id=thread,
            ),
        )
        if message is None:
            self._approvals.decide(prompt.id, Decision(False, "error", "The approval prompt could not be shown."))
            return
        shown.message_id = message.message_id
        self._shown[prompt.id] = shown

    async def resolved(self, prompt: PermissionPrompt, decision: Decision) -> None:
        shown = self._shown.pop(prompt.id, None)
        for chat, (waiting, _) in list(self._typing.items()):
            if waiting == prompt.id:
                del self._typing[chat]
        if shown is None:
            return
        final = f"{shown.text}\n\n{verdict(shown, decision)}"
        await send(
            "permission_decided",
            lambda: self._bot.edit_message_text(final, shown.chat, shown.message_id, entities=shown.entities or None),
        )
        if decision.by == "timeout" and prompt.face != "telegram":  # (a chat's own turn says it in its summary)
            await send(
                "permission_timeout",
                lambda: self._bot.send_message(
                    shown.chat, f"⏱ Nobody answered the prompt for {prompt.tool}: denied.",
                    reply_to_message_id=shown.message_id, allow_sending_without_reply=True,
                    message_thread_id=shown.thread_id,
                ),
            )  # fmt: skip

    async def press(self, data: str, user: User | None) -> str:
        """A button of a prompt was pressed; the toast to show."""
        _, _, rest = data.partition(":")
        prompt_id, _, action = rest.partition(":")
        shown = self._shown.get(prompt_id)
        if shown is None or self._approvals.pending(prompt_id) is None:
            return "This prompt is no longer waiting."
        who = person(user)
        if action in ("a", "A"):
            return self._decide(
                shown,
                Decision(True, who, always=action == "A"),
                "Approved" if shown.kind == "plan" else "Always allowed" if action == "A" else "Allowed",
            )
        if action == "d":
            message = {"question": f"{who} skipped the question.", "plan": f"{who} wants to keep planning."}
            toast = {"question": "Skipped", "plan": "Keep planning"}.get(shown.kind, "Denied")
            return self._decide(shown, Decision(False, who, message.get(shown.kind, f"Denied by {who}.")), toast)
        if action in ("r", "t"):
            self._typing[shown.chat] = (prompt_id, "reason" if action == "r" else "other")
            what = "why (Claude will read it)" if action == "r" else "your answer"
            await send(
                "permission_typing",
                lambda: self._bot.send_message(
                    shown.chat, f"✍️ Send {what} as your next message.", message_thread_id=shown.thread_id
                ),
            )
            return "Type it in the chat"
        if shown.kind == "question" and ((action.startswith("o") and action[1:].isdigit()) or action == "s"):
            return await self._choose(shown, action, who)
        return "This button is not understood."

    async def _choose(self, shown: Shown, action: str, who: str) -> str:
        question = shown.current
        options = _options(question)
        if action == "s":
            if not shown.picked:
                return "Pick at least one option first"
            return await self._answer(shown, ", ".join(shown.picked), who)
        index = int(action[1:])
        if index >= len(options):
            return "This button is not understood."
        label = options[index]
        if not question.get("multiSelect"):
            return await self._answer(shown, label, who)
        shown.picked.remove(label) if label in shown.picked else shown.picked.append(label)
        await self._redraw(shown)
        return f"{'Picked' if label in shown.picked else 'Unpicked'}: {label}"[:190]

    async def _answer(self, shown: Shown, answer: str, who: str) -> str:
        """One question answered: the next one, or, after the last, the answers go to Claude."""
        shown.answers[str(shown.current.get("question") or "")] = answer
        shown.question, shown.picked = shown.question + 1, []
        if shown.question < len(shown.questions):
            shown.text, shown.entities = shown.body()
            await self._redraw(shown)
            return "Next question"
        updated = {**shown.prompt.input, "answers": dict(shown.answers)}
        return self._decide(shown, Decision(True, who, updated_input=updated), "Answered")

    async def _redraw(self, shown: Shown) -> None:
        await send(
            "permission_redraw",
            lambda: self._bot.edit_message_text(
                shown.text, shown.chat, shown.message_id, entities=shown.entities or None, reply_markup=shown.keyboard()
            ),
        )

    def _decide(self, shown: Shown, decision: Decision, toast: str) -> str:
        if not self._approvals.decide(shown.prompt.id, decision):
            return "This prompt is no longer waiting."
        return toast

    async def typed(self, chat: int, text: str, user: User | None) -> bool:
        """A message typed in a chat; True when it answered a prompt (a reason, or an "Other" answer)."""
        waiting = self._typing.pop(chat, None)
        if waiting is None:
            return False
        prompt_id, kind = waiting
        shown = self._shown.get(prompt_id)
        if shown is None or self._approvals.pending(prompt_id) is None:
            return False  # the prompt ended meanwhile: the message is an ordinary one
        who = person(user)
        if kind == "reason":
            self._decide(shown, Decision(False, who, f"Denied by {who}: {text}"), "")
        else:
            await self._answer(shown, text, who)
        return True
