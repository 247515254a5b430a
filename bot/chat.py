"""One Telegram chat: its queue of messages and the turn that runs for it, one at a time."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from telegram import Bot

from bot.calls import send
from bot.errors import failure_text
from bot.files_back import NOTE, SEND_FILE, SERVER, described, send_file
from bot.progress import Progress
from bot.render import Chunk, appended, render, with_footer
from bot.summary import DONE, FAILED, STOPPED, STOPPED_HERE, outcome_of, summary_line, tool_log
from core import (
    AnswerDelta,
    ApprovalDone,
    ApprovalWaiting,
    CancelReason,
    ClaudeMaxError,
    ClientToolsPending,
    Engine,
    Finished,
    Prompt,
    Settings,
    ToolActivity,
    Turn,
    TurnCancelled,
    TurnRequest,
)

log = logging.getLogger("bot.chat")


def conversation_key(chat_id: int, project: str | None = None, thread_id: int | None = None) -> str:
    """A chat's conversation (`tg:<chat>`); a forum topic's (`tg:<chat>:<topic>`); with PROJECTS, one per
    project of each (`...#<project>`)."""
    return f"tg:{chat_id}" + (f":{thread_id}" if thread_id else "") + (f"#{project}" if project else "")


def place_of(key: str, face: str) -> tuple[int, int | None] | None:
    """(chat, forum topic or None) a conversation of this face lives in; None for another face's."""
    if face != "telegram" or not key.startswith("tg:"):
        return None
    chat, _, topic = key.removeprefix("tg:").split("#")[0].partition(":")
    try:
        return int(chat), int(topic) if topic else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Job:
    prompt: Prompt  # text, or content blocks (a photo)
    message_id: int | None
    project: str | None = None  # the chat's project when it was sent: the turn runs there, whatever comes after


def with_note(prompt: Prompt) -> Prompt:
    """A new session's first prompt, after a word (a block of its own) on what the chat can do: files back."""
    note = {"type": "text", "text": NOTE}
    return [note, {"type": "text", "text": prompt}] if isinstance(prompt, str) else [note, *prompt]


class ChatSession:
    def __init__(
        self, chat_id: int, *, private: bool, bot: Bot, engine: Engine, settings: Settings, thread_id: int | None = None
    ) -> None:
        self.chat_id = chat_id
        self.private = private
        self.thread_id = thread_id  # the forum topic the chat's messages go to (None: the chat itself)
        # The chat's (or topic's) own choices (model, mode, project) are kept under it.
        self.base = conversation_key(chat_id, thread_id=thread_id)
        self.project: str | None = None  # with PROJECTS: the one it works in (see `BotApp._chat`)
        self._bot = bot
        self._engine = engine
        self._settings = settings
        self.jobs: deque[Job] = deque()
        self.held: dict[int, Job] = {}  # messages that waited while the daemon was down, until Run it or Skip
        self.current: Job | None = None
        self.turn: Turn | None = None
        self._workdir = settings.workdir  # the running turn's project directory: files are sent only from it
        self.progress: Progress | None = None
        self._stop_reason: CancelReason | None = None
        self._worker: asyncio.Task[None] | None = None
        self._cancelling: asyncio.Task[None] | None = None
        self._entering: asyncio.Task[Finished] | None = None  # the turn, from its wait for a slot to its end
        self._ending = False  # the running turn has ended and its messages are being sent

    @property
    def key(self) -> str:
        """The conversation the chat's next turn continues: its current project's."""
        return conversation_key(self.chat_id, self.project, self.thread_id)

    @property
    def running_project(self) -> str | None:
        """The project the running (or next) turn works in: the one its message was sent in."""
        return self.current.project if self.current is not None else None

    @property
    def approval_waiting(self) -> bool:
        return self.progress is not None and bool(self.progress.approval)

    @property
    def busy(self) -> bool:
        """A turn runs: from its message's start until it has ended (not while its messages are sent)."""
        return self.current is not None and not self._ending

    def submit(self, job: Job) -> int:
        """Queue a message; returns how many turns run before it (0: it starts now)."""
        ahead = len(self.jobs) + (1 if self.busy else 0)
        self.jobs.append(job)
        if self.progress is not None:
            self.progress.queued = len(self.jobs)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return ahead

    def edit(self, message_id: int, prompt: Prompt) -> bool:
        """A message that is still queued (or held) takes its edited text; False if none is."""
        for index, job in enumerate(self.jobs):
            if job.message_id == message_id and isinstance(job.prompt, str):
                self.jobs[index] = dataclasses.replace(job, prompt=prompt)
                return True
        held = self.held.get(message_id)
        if held is not None and isinstance(held.prompt, str):
            self.held[message_id] = dataclasses.replace(held, prompt=prompt)
            return True
        return False

    def stop(self, reason: CancelReason = CancelReason.STOPPED) -> tuple[str, int]:
        """Cancel the running turn and drop the queue, without waiting.

        Returns what happened ("stopping", "already stopping" or "idle") and how many queued
        messages were dropped. The turn's process group is killed in the background; the
        worker then tells the chat.
        """
        dropped = len(self.jobs)
        self.jobs.clear()
        if not self.busy:  # (an answered turn whose messages are still being sent has nothing to stop)
            return "idle", dropped
        if self._stop_reason is not None:
            return "already stopping", dropped
        self._stop_reason = reason
        if self.turn is not None:
            self._cancelling = asyncio.create_task(self.turn.cancel(reason))
        elif self._entering is not None:
            self._entering.cancel()  # still waiting for a slot or for the CLI to start
        return "stopping", dropped

    async def settled(self, within: float) -> None:
        """Wait (at most `within` seconds) until the chat runs no turn: after a `stop()`, until it has ended."""
        if self._worker is not None and not self._worker.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await asyncio.shield(self._worker)

    async def close(self) -> None:
        """Stop for a shutdown; the chat is told of the queued messages that did not run."""
        _, dropped = self.stop(CancelReason.SHUTDOWN)
        if self._worker is not None:
            try:
                async with asyncio.timeout(self._settings.kill_grace + 5):
                    await asyncio.shield(self._worker)
            except TimeoutError:
                self._worker.cancel()
        if dropped:
            these = "that message" if dropped == 1 else f"those {dropped} messages"
            text = (f"📥 {dropped} queued message{'s' if dropped > 1 else ''} did not run: the daemon is shutting "
                    f"down. Send {these} again once it is back.")  # fmt: skip
            await send(
                "shutdown_dropped", lambda: self._bot.send_message(self.chat_id, text, message_thread_id=self.thread_id)
            )

    async def _work(self) -> None:
        while self.jobs:
            job = self.jobs.popleft()
            self.current, self._stop_reason, self._ending = job, None, False
            try:
                await self._run(job)
            except Exception:
                log.exception("chat_turn_crashed chat=%s", self.chat_id)
            finally:
                self.current = None

    async def _run(self, job: Job) -> None:
        progress = Progress(self._bot, self.chat_id, self._settings.telegram_edit_interval, self.private,
                            reply_to=job.message_id, queued=len(self.jobs), thread_id=self.thread_id)  # fmt: skip
        self.progress = progress
        await progress.start()
        store = self._engine.store
        model = await store.preferred_model(self.base) or ""
        mode = await store.permission_mode(self.base) or self._settings.telegram_permission_mode
        summary = FAILED
        messages: list[Chunk] = []  # what the turn ends with; its summary goes at the end of them
        refused: tuple[str, ...] = ()
        try:
            workdir = self._settings.project_dirs.path(job.project) if job.project else self._settings.workdir
            self._workdir = workdir
            request = TurnRequest(
                prompt_for=lambda resumed: job.prompt if resumed else with_note(job.prompt),
                key=conversation_key(self.chat_id, job.project, self.thread_id),
                model=model, face="telegram", patient=True, permission_mode=mode, workdir=str(workdir),
                on_queued=lambda: setattr(progress, "waiting_for_slot", True),
                tools=(SEND_FILE,), tools_server=SERVER,
            )  # fmt: skip
            finished = await self._run_turn(request, progress)
            messages = render(finished.text) or [Chunk("(Claude finished without a text answer.)")]
            refused = finished.refused
            summary = summary_line(progress, finished.cost_usd, DONE, finished.fallback, refused)
        except ClaudeMaxError as exc:
            error: ClaudeMaxError = exc
            if self._stop_reason is not None and not isinstance(exc, TurnCancelled):
                error = TurnCancelled(self._stop_reason)  # the stop killed it, whatever the CLI said
            written = render(progress.answer) if progress.answer.strip() else []  # kept, whatever ended the turn
            if isinstance(error, TurnCancelled):
                withdrawn = progress.withdrawn or progress.approval
                refused = (withdrawn,) if withdrawn else ()  # a call waiting for approval never ran
            if isinstance(error, TurnCancelled) and error.reason is CancelReason.STOPPED:
                # Stopped by the user, who was told so: what Claude had written stays, and the summary says where
                # it stopped (nothing written: the status message becomes the summary).
                messages = written
                summary = summary_line(progress, None, STOPPED_HERE if written else STOPPED, refused=refused)
            else:  # what was written, then why it ends there (in its last message when there is room)
                messages = appended(written, Chunk(failure_text(error, progress)))
                summary = summary_line(progress, None, outcome_of(error), refused=refused)
        finally:
            self._ending = True  # (the turn is over: a stop from now on has nothing to stop)
            self.turn = None
            self.progress = None
            await progress.stop()
            footed = bool(messages) and await self.deliver(
                with_footer(messages, summary, tool_log(progress, refused)), reply_to=job.message_id
            )
            await progress.finish(summary, shown_below=footed)

    async def _run_turn(self, request: TurnRequest, progress: Progress) -> Finished:
        """Run the turn in a task of its own, so that /stop can end it while it still waits for a slot."""
        self._entering = asyncio.create_task(self._read_turn(request, progress))
        try:
            return await self._entering
        except asyncio.CancelledError:
            if self._stop_reason is None or not self._entering.cancelled():
                raise  # not our stop: the daemon is going away
            raise TurnCancelled(self._stop_reason) from None
        finally:
            self._entering = None

    async def _read_turn(self, request: TurnRequest, progress: Progress) -> Finished:
        finished: Finished | None = None
        async with self._engine.turn(request) as turn:  # waits for a slot in arrival order, without a limit
            progress.waiting_for_slot = False
            self.turn = turn
            if self._stop_reason is not None:  # stopped while waiting for the CLI to start
                self._cancelling = asyncio.create_task(turn.cancel(self._stop_reason))
            async for event in turn:
                if isinstance(event, ToolActivity):
                    progress.tool(event)
                elif isinstance(event, AnswerDelta):
                    progress.write(event.text)
                elif isinstance(event, ApprovalWaiting):
                    progress.approval = event.description
                elif isinstance(event, ApprovalDone):
                    if event.decision.by == "stop":  # withdrawn by the stop: the call never ran
                        progress.withdrawn = progress.approval
                    progress.approval = ""
                elif isinstance(event, ClientToolsPending):  # Claude called send_file: the bot is that client
                    results = {}
                    for call in event.calls:
                        results[call.call_id] = result = await send_file(
                            self._bot, self.chat_id, self.thread_id, self._workdir, call.arguments
                        )
                        progress.tool(described(call.arguments, sent=not result[1]))
                    await turn.continue_with(results, head_after=None)
                elif isinstance(event, Finished):
                    finished = event
        assert finished is not None, "a turn that ends without an error has finished"
        return finished

    async def deliver(self, chunks: list[Chunk], reply_to: int | None = None) -> bool:
        """Send messages to the chat's topic (plain text where entities are refused); False if one was lost."""
        say = functools.partial(self._bot.send_message, self.chat_id, message_thread_id=self.thread_id)
        delivered = True
        for index, chunk in enumerate(chunks):
            reply: dict[str, Any] = (
                {"reply_to_message_id": reply_to, "allow_sending_without_reply": True} if index == 0 else {}
            )
            sent = await send("answer", functools.partial(say, chunk.text, entities=chunk.entities, **reply))
            if sent is None:
                sent = await send("answer_plain", functools.partial(say, chunk.text))
            delivered = delivered and sent is not None
        return delivered
