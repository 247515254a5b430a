"""The Telegram bot: handlers, access control, and its life inside the daemon's event loop.

Handlers only queue work and answer commands; turns run in each chat's own worker, so
a /stop is handled at once even while a turn runs, and shutdown never waits on a turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from telegram import BotCommand, Message, Update
from telegram.constants import ChatType
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.albums import Albums, Upload, upload_prompt
from bot.approvals import PREFIX as APPROVAL_PREFIX
from bot.approvals import ApprovalDesk
from bot.calls import quiet_handled_flood_control, send, typing
from bot.chat import ChatSession, Job, place_of
from bot.choices import PREFIXES as CHOICE_PREFIXES
from bot.choices import ChatChoices, Reply
from bot.late import LATE_PREFIX, late_keyboard, late_question, waited
from bot.limits_text import crossing_text
from bot.pastes import Pastes
from bot.progress import STOP_DATA
from bot.prompt_text import has_words, with_quote
from bot.uploads import UploadRefused, check_size, upload_path
from bot.voice import NOT_SET_UP, TranscriptionFailed, transcribe
from core import (
    ActivityTimeout,
    BadImage,
    Engine,
    LimitCrossing,
    ProjectError,
    Prompt,
    SessionNotFound,
    Settings,
    Turn,
    TurnFailed,
    format_duration,
    image_block_from_bytes,
)

STOP_POLLING_WAIT = 2.0  # seconds a shutdown waits for the poller (a Bot API out of reach keeps it in backoff)

log = logging.getLogger("bot.app")

Context = ContextTypes.DEFAULT_TYPE

COMMANDS = [
    BotCommand("new", "Start a fresh Claude session"),
    BotCommand("stop", "Stop the running turn"),
    BotCommand("status", "Session, model, running turn, usage"),
    BotCommand("model", "Show or set this chat's model"),
    BotCommand("mode", "Show or set who approves what Claude does"),
    BotCommand("project", "Show or switch the project Claude works in"),
    BotCommand("resume", "Continue one of the project's Claude Code sessions"),
    BotCommand("help", "What this bot does"),
    BotCommand("start", "Say hello"),
]

HELP = (
    "I pass your messages to Claude Code on the owner's machine and send back its answers.\n\n"
    "Each chat (and forum topic) keeps its own session, across messages and restarts. While Claude works you "
    "see which tools it runs; press Stop or send /stop to cancel. Photos and documents are saved in the "
    "project and Claude is told where; voice messages are transcribed where the owner set that up. Claude can "
    "send you files of the project. Reply to a message to give Claude its text as context.\n\n"
    "/new – start a fresh session\n/stop – stop the running turn\n/status – project, session, model, usage\n"
    "/model [name] – show or set the model (opus, sonnet, haiku, or a full id)\n"
    "/mode [ask|edits|plan|bypass] – show or set who approves what Claude does\n"
    "/project [name] – show or switch the project (each has its own session)\n"
    "/resume – continue a Claude Code session of the project, also one begun in a terminal\n/help – this text"
)


GONE = "That message is no longer waiting: send it again if you still want it."


def dropped_text(dropped: int) -> str:
    """What a stop says of the queued messages it dropped (nothing when there were none)."""
    return f" Dropped {dropped} queued message{'s' if dropped > 1 else ''}." if dropped else ""


class ClaudeBot:
    """The bot on a shared engine. `start()` and `stop()` fit inside another server's event loop."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        assert settings.telegram_bot_token is not None
        self.settings = settings
        self.engine = engine
        self.chats: dict[tuple[int, int | None], ChatSession] = {}  # by chat and forum topic
        self._told_strangers: set[int] = set()
        root = settings.telegram_api_url.rstrip("/")
        self.application: Application = (  # type: ignore[type-arg]
            ApplicationBuilder()
            .token(settings.telegram_bot_token.get_secret_value())
            .base_url(f"{root}/bot")
            .base_file_url(f"{root}/file/bot")
            .concurrent_updates(True)
            # A second connection for getUpdates: the call that marks the last updates read at shutdown must not
            # wait for the long poll's (a pool timeout there and Telegram delivers those updates again).
            .get_updates_connection_pool_size(2)
            .rate_limiter(AIORateLimiter(max_retries=0))
            .build()
        )
        quiet_handled_flood_control()
        self.albums = Albums(self._queue)
        self.pastes = Pastes(self._whole_paste)
        self.choices = ChatChoices(settings, engine)
        self.desk = ApprovalDesk(self.application.bot, engine.approvals, settings)
        self._register()
        self.started = False
        self.started_at = 0.0  # when polling started: messages sent before it waited while the bot was down

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> bool:
        """Connect and start polling; False (and a log line) when Telegram refuses the token or is unreachable."""
        app = self.application
        try:
            await app.initialize()
        except InvalidToken:
            log.error("telegram_disabled reason=invalid_token hint=check TELEGRAM_BOT_TOKEN")
            return False
        except TelegramError as exc:
            log.error("telegram_disabled reason=%s", exc)
            return False
        await send("set_my_commands", lambda: app.bot.set_my_commands(COMMANDS))
        assert app.updater is not None
        self.started_at = time.time()
        await app.updater.start_polling(
            poll_interval=0, timeout=10, allowed_updates=["message", "edited_message", "callback_query"],
            error_callback=lambda exc: log.warning("telegram_polling_error error=%s", exc),
        )  # fmt: skip
        await app.start()
        self.engine.on_turn_end(self._alert_http_failure)
        self.engine.approvals.register(self.desk.show, self.desk.resolved)
        self.engine.limits.on_crossing(self._tell_limit)
        self.started = True
        log.info(
            "telegram_started bot=@%s allowed_users=%d", app.bot.username, len(self.settings.telegram_allowed_users)
        )
        return True

    async def stop_polling(self, within: float = STOP_POLLING_WAIT) -> None:
        """Stop asking Telegram for updates. With the Bot API out of reach, PTB's poller sits in its retry
        backoff; it is not waited for longer than `within` (it is marked stopped at once, and ends on its own)."""
        if self.started and self.application.updater is not None and self.application.updater.running:
            try:
                async with asyncio.timeout(within):
                    await self.application.updater.stop()
            except TimeoutError:
                log.warning("polling_stop_slow waited_s=%s; the Bot API seems out of reach", within)

    async def stop(self) -> None:
        """Stop polling, stop every chat's turn (telling the chat), and shut the application down."""
        if not self.started:
            return
        await self.stop_polling()
        await self.albums.stop()
        await self.pastes.flush()
        for chat in list(self.chats.values()):
            await chat.close()
        await self.application.stop()
        await self.application.shutdown()
        self.started = False
        log.info("telegram_stopped")

    # -- handlers --------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.application
        app.add_handler(TypeHandler(Update, self._gate), group=-1)
        app.add_handler(MessageHandler(filters.UpdateType.EDITED_MESSAGE, self._edited))  # (before the rest)
        app.add_handler(CommandHandler("start", self._help))
        app.add_handler(CommandHandler("help", self._help))
        app.add_handler(CommandHandler("new", self._new))
        app.add_handler(CommandHandler("stop", self._stop))
        app.add_handler(CommandHandler("status", self._status))
        app.add_handler(CommandHandler("model", self._model))
        app.add_handler(CommandHandler("mode", self._mode))
        app.add_handler(CommandHandler("project", self._project))
        app.add_handler(CommandHandler("resume", self._resume))
        app.add_handler(CallbackQueryHandler(self._button))
        app.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL, self._file))
        app.add_handler(MessageHandler(filters.VOICE | filters.AUDIO, self._voice))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self._text))
        app.add_handler(MessageHandler(filters.COMMAND, self._unknown_command))
        app.add_handler(MessageHandler(filters.ALL, self._unsupported))
        app.add_error_handler(self._error)

    async def _gate(self, update: object, context: Context) -> None:
        """Only allowed users get past; anyone else learns their id once, and nothing is kept."""
        if not isinstance(update, Update):
            raise ApplicationHandlerStop
        user = update.effective_user
        if user is not None and user.id in self.settings.telegram_allowed_users:
            return
        if update.callback_query is not None:
            await send("answer_callback", lambda: update.callback_query.answer("Not allowed."))  # type: ignore[union-attr]
        elif update.effective_message is not None and user is not None and user.id not in self._told_strangers:
            self._told_strangers.add(user.id)
            message = update.effective_message
            await send(
                "stranger",
                lambda: message.reply_text(
                    f"Sorry, this bot is private. Your Telegram user id is {user.id}. "
                    "The owner can allow you by adding it to TELEGRAM_ALLOWED_USERS."
                ),
            )
        log.info("telegram_refused user=%s", user.id if user else None)
        raise ApplicationHandlerStop

    async def _chat(self, update: Update) -> ChatSession:
        chat = update.effective_chat
        assert chat is not None
        # A forum topic is a chat of its own: its own session, and every message of its turns goes to it.
        _, thread = self._place(update)
        session = self.chats.get((chat.id, thread))
        if session is None:
            session = ChatSession(
                chat.id, private=chat.type == ChatType.PRIVATE, bot=self.application.bot,
                engine=self.engine, settings=self.settings, thread_id=thread,
            )  # fmt: skip
            self.chats[(chat.id, thread)] = session
            projects = self.settings.project_dirs
            if projects.configured:  # the project it chose, else the first there is
                names = projects.names()
                chosen = await self.engine.store.project(session.base)
                session.project = chosen if chosen is not None else (names[0] if names else None)
        return session

    @staticmethod
    def _place(update: Update) -> tuple[int, int | None]:
        """The chat and forum topic an update came from."""
        chat, message = update.effective_chat, update.effective_message
        assert chat is not None
        return chat.id, message.message_thread_id if message is not None and message.is_topic_message else None

    async def _reply(self, update: Update, reply: str | Reply) -> None:
        message = update.effective_message
        if message is not None:
            answer = reply if isinstance(reply, Reply) else Reply(reply)
            await send("reply", lambda: message.reply_text(answer.text, reply_markup=answer.buttons))

    async def _help(self, update: Update, context: Context) -> None:
        await self._reply(update, HELP)

    async def _queue(self, update: Update, prompt: Prompt) -> None:
        message = update.effective_message
        chat = await self._chat(update)
        job = Job(prompt, message.message_id if message else None, chat.project)
        age = waited(message, self.started_at) if message is not None else None
        if message is not None and age is not None:  # sent while the daemon was down: asked about first
            chat.held[message.message_id] = job
            log.info("telegram_late_message chat=%s waited_s=%.0f", chat.chat_id, age)
            keyboard = late_keyboard(message.message_id)
            await send("reply", lambda: message.reply_text(late_question(age), reply_markup=keyboard))
            return
        ahead = chat.submit(job)
        if ahead == 1 and chat.busy:
            waiting = " A prompt above waits for you: answer it with its buttons." if chat.approval_waiting else ""
            await self._reply(update, f"📥 Queued: I will answer this after the current turn (/stop cancels).{waiting}")

    async def _late(self, chat: ChatSession, data: str) -> str:
        """A press on Run it / Skip under a message that waited; what its question becomes."""
        action, _, ident = data.removeprefix(LATE_PREFIX).partition(":")
        job = chat.held.pop(int(ident), None) if ident.isdigit() else None
        if job is None:
            return GONE
        if action != "run":
            return "✖️ Skipped: nothing was sent to Claude."
        ahead = chat.submit(job)
        return "▶️ Running it." if not ahead else "▶️ Queued: it runs after the current turn."

    async def _text(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None:
            return
        if not has_words(message.text or ""):
            await self._reply(update, "That message looks empty to me: nothing was sent to Claude.")
            return
        text = message.text or ""
        if await self._answered(update, text):
            return
        user = update.effective_user
        if self.pastes.hold((*self._place(update), user.id if user else 0), update, message, text):
            return  # (maybe the first part of a long paste: queued when it is whole)
        await self._queue(update, with_quote(message, text))

    async def _edited(self, update: Update, context: Context) -> None:
        """An edited message: a queued one (or one held after a restart) takes the new text; one Claude
        has read already is not run again, and the user is told how to send the change."""
        message = update.effective_message
        if message is None or (message.text or "").startswith("/"):
            return
        chat = await self._chat(update)
        text = message.text or ""
        if has_words(text) and chat.edit(message.message_id, with_quote(message, text)):
            log.info("telegram_edit_taken chat=%s", chat.chat_id)
            await self._reply(update, "✏️ Edited before Claude read it: the new text is what it reads.")
            return
        await self._reply(update, "✏️ Claude has read that message already, so the edit does not reach it: "
                                  "send the change as a new message.")  # fmt: skip

    async def _answered(self, update: Update, text: str) -> bool:
        """Whether typed or spoken text is the answer a prompt waits for (a reason to deny, an Other)."""
        chat = update.effective_chat
        if chat is not None and await self.desk.typed(chat.id, text, update.effective_user):
            await self._reply(update, "✍️ Got it: Claude reads that as your answer to the prompt.")
            return True
        return False

    async def _whole_paste(self, update: Update, message: Message, text: str) -> None:
        await self._queue(update, with_quote(message, text))

    async def _file(self, update: Update, context: Context) -> None:
        """A photo or document: saved in the project, and the prompt says where (a photo Claude also sees).
        The items of an album are one prompt."""
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None:
            return
        album = f"{chat.id}:{message.media_group_id}" if message.media_group_id else None
        if album is None:
            upload = await self._take(update, message, chat.id)
            if upload is not None:
                await self._queue(update, upload_prompt([upload]))
            return
        self.albums.expect(album, update, message.message_id)
        upload = None
        try:
            upload = await self._take(update, message, chat.id)
        finally:
            self.albums.add(album, upload)

    async def _take(self, update: Update, message: Message, chat_id: int) -> Upload | None:
        """Download a photo or document into the chat's project; None (and the user told why) if it cannot."""
        if message.document is not None:
            item: Any = message.document
            name, kind = message.document.file_name, "file"
        else:
            item, name, kind = message.photo[-1], "photo.jpg", "photo"
        try:
            check_size(item.file_size, self.settings.telegram_max_file_mb)
            workdir = self.choices.workdir(await self._chat(update))
            path = upload_path(workdir, chat_id, name, default=kind, message_id=message.message_id)
            telegram_file = await item.get_file()
            await telegram_file.download_to_drive(path)
        except (UploadRefused, ProjectError) as exc:
            await self._reply(update, f"⚠️ I could not take that {kind}: {exc}")
            return None
        except TelegramError as exc:
            await self._reply(update, f"⚠️ I could not download that {kind}: {exc.message}")
            return None
        log.info("telegram_upload chat=%s path=%s bytes=%s", chat_id, path, path.stat().st_size)
        image = None
        if kind == "photo":  # Telegram photos are JPEGs: Claude sees the picture itself, not only its path
            try:
                image = image_block_from_bytes("image/jpeg", await asyncio.to_thread(path.read_bytes))
            except BadImage as exc:
                log.info("telegram_photo_not_passed chat=%s reason=%s", chat_id, exc)
        return Upload(message.message_id, kind, path, (message.caption or "").strip(), image)

    async def _voice(self, update: Update, context: Context) -> None:
        """A voice or audio message: transcribed, shown back, and the text is the prompt."""
        message = update.effective_message
        if message is None:
            return
        if not self.settings.transcribe_url:
            await self._reply(update, NOT_SET_UP)
            return
        recording: Any = message.voice or message.audio
        name = getattr(recording, "file_name", None) or "voice.ogg"
        mime = getattr(recording, "mime_type", None) or "audio/ogg"
        try:
            check_size(recording.file_size, self.settings.telegram_max_file_mb)
            audio = bytes(await (await recording.get_file()).download_as_bytearray())
            async with typing(self.application.bot, *self._place(update)):  # (a slow transcription is seen)
                text = await transcribe(self.settings, audio, name, mime)
        except (UploadRefused, TranscriptionFailed) as exc:
            await self._reply(update, f"⚠️ I could not use that recording: {exc}. Nothing was sent to Claude.")
            return
        except TelegramError as exc:
            await self._reply(update, f"⚠️ I could not download that recording: {exc.message}")
            return
        await self._reply(update, f"🎙 I heard: “{text}”")
        caption = (message.caption or "").strip()
        if not await self._answered(update, text):
            await self._queue(update, with_quote(message, f"{caption}\n\n{text}" if caption else text))

    async def _stop(self, update: Update, context: Context) -> None:
        state, dropped = (await self._chat(update)).stop()
        text = {
            "idle": "Nothing is running.", "already stopping": "Already stopping.",
            "stopping": "⏹ Stopping. The conversation is kept: send a message to go on.",
        }[state]  # fmt: skip
        text += dropped_text(dropped)
        await self._reply(update, text)

    async def _button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        assert query is not None
        if (query.data or "").startswith(f"{APPROVAL_PREFIX}:"):
            toast = await self.desk.press(query.data or "", update.effective_user)
            await send("answer_callback", lambda: query.answer(toast))
            return
        data = query.data or ""
        if data.startswith(LATE_PREFIX) and query.message is not None:
            answer = await self._late(await self._chat(update), data)
            if answer.startswith(GONE):  # (a press on an old keyboard: the question keeps what it says)
                await send("answer_callback", lambda: query.answer(answer))
                return
            await send("answer_callback", lambda: query.answer())
            asked = query.message
            text = f"{asked.text}\n{answer}" if isinstance(asked, Message) and asked.text else answer
            await send(
                "late_answered", lambda: self.application.bot.edit_message_text(text, asked.chat.id, asked.message_id)
            )
            return
        if data.startswith(CHOICE_PREFIXES):
            chat = await self._chat(update)
            text, now = await self.choices.press(chat, data)
            await send("answer_callback", lambda: query.answer())
            await send(
                "reply", lambda: self.application.bot.send_message(chat.chat_id, text, message_thread_id=chat.thread_id)
            )
            listing = query.message
            if now is not None and isinstance(listing, Message):  # the listing names and ticks the new choice
                await send("listing_now", lambda: listing.edit_text(now.text, reply_markup=now.buttons))
            return
        if data != STOP_DATA:
            await send("answer_callback", lambda: query.answer())
            return
        state, dropped = (await self._chat(update)).stop()
        text = {"idle": "Nothing is running.", "already stopping": "Already stopping.", "stopping": "Stopping…"}[state]
        text += dropped_text(dropped)
        await send("answer_callback", lambda: query.answer(text))

    # -- where the chat works: /project, /resume ---------------------------------------------------

    async def _project(self, update: Update, context: Context) -> None:
        await self._reply(update, await self.choices.project(await self._chat(update), context.args or []))

    async def _resume(self, update: Update, context: Context) -> None:
        await self._reply(update, await self.choices.resume(await self._chat(update)))

    async def _new(self, update: Update, context: Context) -> None:
        chat = await self._chat(update)
        state, dropped = chat.stop()
        await chat.settled(self.settings.kill_grace + 5)  # what the stopped turn had written comes first
        forgot = await self.engine.forget(chat.key)
        text = "🆕 Fresh session: Claude no longer sees this chat's earlier messages."
        if state != "idle":
            text = "⏹ Stopped the running turn. " + text
        elif not forgot:
            text = "🆕 This chat has no session yet; your next message starts one."
        text += dropped_text(dropped)  # (they were meant for the old session)
        await self._reply(update, text)

    async def _model(self, update: Update, context: Context) -> None:
        await self._reply(update, await self.choices.model(await self._chat(update), context.args or []))

    async def _mode(self, update: Update, context: Context) -> None:
        await self._reply(update, await self.choices.mode(await self._chat(update), context.args or []))

    async def _status(self, update: Update, context: Context) -> None:
        await self._reply(update, await self.choices.status(await self._chat(update)))

    async def _unknown_command(self, update: Update, context: Context) -> None:
        """A command none of the handlers took: one addressed to another bot (`/cmd@other_bot`), or, in a
        group, maybe meant for another bot there, is left alone; in a private chat the user is told."""
        message, chat = update.effective_message, update.effective_chat
        command = (message.text or "").split(maxsplit=1)[0] if message is not None else ""
        _, at, addressee = command.partition("@")
        ours = addressee.lower() == (self.application.bot.username or "").lower()
        if (at and not ours) or (not at and chat is not None and chat.type != ChatType.PRIVATE):
            log.info("telegram_command_ignored chat=%s addressed=%s", chat.id if chat else None, bool(at))
            return
        await self._reply(update, "Unknown command. /help lists what I understand.")

    async def _unsupported(self, update: Update, context: Context) -> None:
        await self._reply(update, "I can read text, photos, documents and voice messages.")

    async def _error(self, update: object, context: Context) -> None:
        log.error("telegram_handler_error update=%s", type(update).__name__, exc_info=context.error)

    # -- alerts for work started over HTTP, and the subscription's limits ---------------------------

    async def _tell_limit(self, crossing: LimitCrossing) -> None:
        """A window crossed a LIMIT_WARN_AT level or is used up: the chat whose turn saw it is told, and
        TELEGRAM_NOTIFY_ID for an HTTP turn's. (A chat's turn refused by the limit says so as its failure.)"""
        own = place_of(crossing.key, crossing.face)
        if own is not None and crossing.reached:
            return
        chat, thread = own if own is not None else (self.settings.telegram_notify_id, None)
        if chat is not None:
            text = crossing_text(crossing, http=own is None)
            await send("limit_notice", lambda: self.application.bot.send_message(chat, text, message_thread_id=thread))

    async def _alert_http_failure(self, turn: Turn, error: BaseException | None) -> None:
        notify = self.settings.telegram_notify_id
        if notify is None or turn.request.face != "http":
            return
        if isinstance(error, ActivityTimeout):
            text = (
                f"⏱ An HTTP turn was stopped: Claude Code printed nothing for {format_duration(error.idle_seconds)} "
                f"(last: {error.last_activity}), {format_duration(turn.elapsed)} into the turn.\n"
                f"Conversation {turn.key}, model {turn.model_answering}."
            )
        elif isinstance(error, TurnFailed) and not isinstance(error, SessionNotFound):
            text = f"⚠️ An HTTP turn failed: {error.message}\nConversation {turn.key}."
        else:
            return
        await send("alert", lambda: self.application.bot.send_message(notify, text))
