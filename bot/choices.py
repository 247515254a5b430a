"""What a chat chooses and is told about itself: its project (/project), the Claude Code session it goes
on with (/resume), its model (/model) and mode (/mode), and /status. Each answer is a `Reply` (text, and
buttons for a listing); `ClaudeBot` (bot.app) sends it. The buttons are drawn in bot.workspace."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from telegram import InlineKeyboardMarkup

from bot.chat import ChatSession
from bot.limits_text import limit_lines
from bot.summary import at_api_prices
from bot.workspace import (
    MODEL_PREFIX,
    PROJECT_PREFIX,
    RESUME_PREFIX,
    model_keyboard,
    project_keyboard,
    session_keyboard,
    session_label,
)
from core import (
    ASK,
    Engine,
    ProjectError,
    SessionSummary,
    Settings,
    UnknownModel,
    family,
    format_duration,
    listed_models,
    resolve_model,
)

log = logging.getLogger("bot.choices")

PREFIXES = (PROJECT_PREFIX, RESUME_PREFIX, MODEL_PREFIX)  # the buttons `ChatChoices.press` answers

MODES = {"ask": ASK, "edits": "acceptEdits", "plan": "plan", "bypass": "bypassPermissions"}
MODE_CHOICES = (
    "/mode ask – every tool that needs approval is asked about here\n/mode edits – file edits run unasked, "
    "the rest is asked\n/mode plan – Claude only plans, changes nothing\n/mode bypass – nothing is asked"
)
_MODE_WORDS = {
    ASK: "ask (you approve each tool that needs it)", "acceptEdits": "edits (file edits unasked)",
    "plan": "plan (Claude plans, changes nothing)", "bypassPermissions": "bypass (nothing is asked)",
}  # fmt: skip


def describe_mode(mode: str) -> str:
    return _MODE_WORDS.get(mode, mode)


def still_elsewhere(chat: ChatSession, name: str) -> str:
    """What a switch to `name` leaves where it was: the running turn and the queued messages go on in the
    project they were sent in."""
    running = chat.busy and chat.running_project != name
    queued = [job.project for job in chat.jobs if job.project != name]
    what = ["the running turn"] if running else []
    if queued:
        what.append(f"{len(queued)} queued message{'s' if len(queued) > 1 else ''}")
    if not what:
        return ""
    places = {*queued, *([chat.running_project] if running else [])}
    where = f"in {places.pop()}" if len(places) == 1 else "in the projects they were sent in"
    one = len(what) == 1 and (running or len(queued) == 1)
    return f" {' and '.join(what).capitalize()} {'goes' if one else 'go'} on {where}."


@dataclass(frozen=True)
class Reply:
    text: str
    buttons: InlineKeyboardMarkup | None = None


class ChatChoices:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    def workdir(self, chat: ChatSession) -> Path:
        """The chat's project directory (`ProjectError` when it is gone), else CLAUDE_WORKDIR."""
        return self.settings.project_dirs.path(chat.project) if chat.project else self.settings.workdir

    async def press(self, chat: ChatSession, data: str) -> tuple[str, Reply | None]:
        """A press on a /project, /resume or /model button: what the chat is told, and the listing as it
        reads now, its text and ticks naming the new choice (None: leave it as it is)."""
        if data.startswith(PROJECT_PREFIX):
            told = await self.switch_project(chat, data.removeprefix(PROJECT_PREFIX))
            return told, await self.project(chat, [])
        if data.startswith(MODEL_PREFIX):
            told = await self.set_model(chat, data.removeprefix(MODEL_PREFIX))
            return told, await self.model(chat, [])
        told = await self.continue_session(chat, data.removeprefix(RESUME_PREFIX))
        listing = await self.resume(chat)
        return told, listing if listing.buttons is not None else None

    # -- /project ------------------------------------------------------------------------------------

    async def project(self, chat: ChatSession, args: list[str]) -> Reply:
        projects = self.settings.project_dirs
        if not projects.configured:
            return Reply(
                f"This bot works in one directory, {self.settings.workdir}. Set PROJECTS (name=path pairs, "
                "or a root of projects) to choose among several."
            )
        if args:
            return Reply(await self.switch_project(chat, " ".join(args)))
        names = projects.names()
        if not names:
            return Reply("⚠️ PROJECTS names no directory that exists.")
        return Reply(
            f"Project: {chat.project or 'none'}{self._gone(chat)}. Pick one (each keeps its own session):",
            project_keyboard(names, chat.project),
        )

    def _gone(self, chat: ChatSession) -> str:
        """A word after the chat's project when its directory is no longer there."""
        try:
            self.workdir(chat)
        except ProjectError as exc:
            return f" (⚠️ {exc.message})"  # (as a turn's failure says it)
        return ""

    async def switch_project(self, chat: ChatSession, name: str) -> str:
        """Make `name` the chat's project; what the chat is told."""
        name = self.settings.project_dirs.named(name)
        try:
            path = self.settings.project_dirs.path(name)
        except ProjectError as exc:
            return f"⚠️ {exc.message}. /project lists the projects."
        await self.engine.store.set_project(chat.base, name)
        chat.project = name
        record = await self.engine.store.get(chat.key)
        goes_on = (
            f"its session goes on ({record.turns} turn{'' if record.turns == 1 else 's'} here)"
            if record
            else "your next message starts its session"
        )
        log.info("telegram_project chat=%s project=%s", chat.chat_id, name)
        return f"📁 Project {name} ({path}): {goes_on}.{still_elsewhere(chat, name)}"

    # -- /resume -------------------------------------------------------------------------------------

    async def resume(self, chat: ChatSession) -> Reply:
        try:
            workdir = self.workdir(chat)
        except ProjectError as exc:
            return Reply(f"⚠️ {exc.message}. /project picks another.")
        sessions = await self.engine.sessions_in(workdir)
        if not sessions:
            return Reply(f"No Claude Code sessions in {workdir} yet.")
        record = await self.engine.store.get(chat.key)
        return Reply(
            f"Sessions in {workdir}, newest first (also those begun with claude in a terminal). Pick one to continue:",
            session_keyboard(sessions, record.session_id if record else None),
        )

    async def continue_session(self, chat: ChatSession, session_id: str) -> str:
        """Make a listed session the chat's (a press on a /resume button); what the chat is told."""
        if chat.busy:
            return "A turn is running: /stop it first, then pick the session again."
        try:
            workdir = self.workdir(chat)
        except ProjectError as exc:
            return f"⚠️ {exc.message}. /project picks another."
        session = await self._session_in(workdir, session_id)
        if session is None:
            other = await self._project_of(session_id, chat.project)
            if other is not None:  # a listing shown before a /project switch
                return (f"That session is project {other}'s, and this chat now works in {chat.project}: "
                        f"/project {other}, then /resume, to continue it.")  # fmt: skip
            return "⚠️ That session is no longer there. /resume lists the ones there are."
        record = await self.engine.store.get(chat.key)
        if record is not None and record.session_id == session_id:
            return f"Session {session_id[:8]}… is already this chat's: your next message goes on with it."
        await self.engine.adopt(chat.key, session_id, workdir)
        log.info("telegram_resume chat=%s session=%s", chat.chat_id, session_id)
        return (f"▶️ Continuing session {session_id[:8]}… (“{session_label(session, False)}”). "
                "Your next message goes on from there.")  # fmt: skip

    async def _session_in(self, workdir: Path, session_id: str) -> SessionSummary | None:
        return next((s for s in await self.engine.sessions_in(workdir, 50) if s.session_id == session_id), None)

    async def _project_of(self, session_id: str, besides: str | None) -> str | None:
        """The other project whose directory has this session, if any."""
        projects = self.settings.project_dirs
        for name in projects.names():
            if name == besides:
                continue
            with contextlib.suppress(ProjectError):
                if await self._session_in(projects.path(name), session_id) is not None:
                    return name
        return None

    # -- /model, /mode -------------------------------------------------------------------------------

    async def model(self, chat: ChatSession, args: list[str]) -> Reply:
        if args:
            return Reply(await self.set_model(chat, args[0]))
        chosen = await self.engine.store.preferred_model(chat.base)
        return Reply(
            f"Model: {await self.model_words(chat)}.\nPick one, or send /model <name> (a full id works too):",
            model_keyboard(self._model_names(), chosen),
        )

    async def set_model(self, chat: ChatSession, name: str) -> str:
        """Make `name` the chat's model (`default`: none of its own); what the chat is told."""
        store = self.engine.store
        if name.lower() == "default":
            await store.set_preferred_model(chat.base, None)
            return f"Model reset to the default ({await self.model_words(chat)})."
        try:
            model = resolve_model(name, aliases=self.settings.model_aliases)
        except UnknownModel:
            return f"⚠️ Unknown model {name!r}. Try opus, sonnet or haiku."
        await store.set_preferred_model(chat.base, model)
        return f"Model set to {model} for this chat, from the next message on."

    async def model_words(self, chat: ChatSession) -> str:
        """The chat's model as /status and /model say it: the one chosen (and where), and the model that
        gave the last answer when that is another (the CLI's default, a fallback)."""
        chosen = await self.engine.store.preferred_model(chat.base)
        last = (await self.engine.store.usage(chat.key)).last_model
        wanted = chosen or self.settings.default_model
        if wanted:
            words = f"{chosen} (this chat's choice)" if chosen else f"{wanted} (DEFAULT_MODEL)"
            same = last in (wanted, "") or family(last) == wanted  # ("haiku" is answered by claude-haiku-…)
            return words + ("" if same else f", last answer from {last}")
        return f"the CLI's default (last answer from {last})" if last else "the CLI's default"

    def _model_names(self) -> list[str]:
        """The models offered as buttons: the short names (a full id can still be typed)."""
        return [n for n in listed_models(self.settings.model_aliases) if not n.startswith("claude-")]

    async def mode(self, chat: ChatSession, args: list[str]) -> str:
        store = self.engine.store
        if not args:
            current = await store.permission_mode(chat.base) or self.settings.telegram_permission_mode
            return f"Mode: {describe_mode(current)}.\n{MODE_CHOICES}"
        name = args[0].lower()
        mode = MODES.get(name)
        if mode is None:
            return f"⚠️ Unknown mode {name!r}.\n{MODE_CHOICES}"
        await store.set_permission_mode(chat.base, mode)
        return f"Mode set to {describe_mode(mode)}, from the next message on."

    # -- /status -------------------------------------------------------------------------------------

    async def status(self, chat: ChatSession) -> str:
        store = self.engine.store
        record = await store.get(chat.key)
        usage = await store.usage(chat.key)
        mode = await store.permission_mode(chat.base) or self.settings.telegram_permission_mode
        lines = [
            f"Session: {record.session_id[:8]}… ({record.turns} answered turn{'' if record.turns == 1 else 's'} here)"
            if record
            else (
                "Session: being started by the running turn"
                if chat.busy and chat.running_project == chat.project
                else "Session: none yet"
            ),
            f"Model: {await self.model_words(chat)}",
            f"Mode: {describe_mode(mode)}",
        ]
        if chat.project:
            lines.insert(0, f"Project: {chat.project}{self._gone(chat)}")
        progress = chat.progress
        if chat.busy and progress is not None:
            elsewhere = f" (in {chat.running_project})" if chat.running_project != chat.project else ""
            lines.append(f"Running{elsewhere}: {format_duration(progress.elapsed)}, now {progress.doing}")
        else:
            lines.append("Running: nothing")
        if chat.jobs:
            others = [job for job in chat.jobs if job.project != chat.project]
            for_others = f" ({len(others)} for {', '.join(sorted({j.project or '' for j in others}))})"
            lines.append(f"Queued: {len(chat.jobs)}" + (for_others if others else ""))
        unanswered = usage.turns - usage.answered
        lines.append(
            f"Usage, all sessions here: {usage.turns} turn{'' if usage.turns == 1 else 's'}"
            + (f" ({unanswered} without an answer)" if unanswered else "")
            + f", {usage.prompt_tokens:,} tokens in, {usage.completion_tokens:,} out, {at_api_prices(usage.cost_usd)}"
        )
        lines += limit_lines(self.engine.limits)
        return "\n".join(lines)
