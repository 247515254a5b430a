"""A fake Telegram Bot API server: records every call, serves getUpdates, enforces Telegram's rules.

It keeps the chat as the user would see it (messages and their current text), answers
with Telegram's own error strings when the bot breaks a rule (too long, not modified,
bad entities, unknown message), and can inject faults (429 with retry_after, network
errors) for chosen methods.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "4242:fake-token-for-the-fake-server"  # deliberately not shaped like a real token
BOT_USER = {"id": 4242, "is_bot": True, "first_name": "ClaudeMax", "username": "claude_max_test_bot"}
_JSON_FIELDS = {"entities", "reply_markup", "commands", "allowed_updates", "scope", "caption_entities"}


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 200
    description: str = ""


@dataclass
class SentMessage:
    chat_id: int
    message_id: int
    text: str
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    thread_id: int | None = None  # the forum topic it was sent to
    edits: list[float] = field(default_factory=list)
    deleted: bool = False


@dataclass
class Upload:
    kind: str  # photo, document
    chat_id: int
    filename: str
    data: bytes
    caption: str
    thread_id: int | None


@dataclass
class Fault:
    status: int
    description: str
    retry_after: int | None = None


class FakeTelegram:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[int, SentMessage] = {}
        self.files: dict[str, tuple[str, bytes]] = {}
        self.uploads: list[Upload] = []  # files the bot sent
        self.faults: dict[str, list[Fault]] = {}
        self.held: dict[str, asyncio.Event] = {}  # calls of these methods wait until their event is set
        self.drafts_supported = True
        self.polled_elsewhere = False  # another bot instance holds getUpdates: 409
        self.port = 0
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._new_update = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)  # the Bot API takes GET and POST
        app.router.add_get("/file/bot{token}/{path:.*}", self._file)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Stop serving: from now on the Bot API is out of reach (as on a network outage)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- what the user does -------------------------------------------------------------

    def _push(self, update: dict[str, Any]) -> dict[str, Any]:
        update["update_id"] = next(self._update_ids)
        self._updates.append(update)
        self._new_update.set()
        return update

    def _message(self, user_id: int, chat_id: int, sent_ago: float = 0, **content: Any) -> dict[str, Any]:
        chat_type = "private" if chat_id == user_id else "group"
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time() - sent_ago),
            "chat": {
                "id": chat_id,
                "type": chat_type,
                **({"first_name": "U"} if chat_type == "private" else {"title": "G"}),
            },
            "from": {"id": user_id, "is_bot": False, "first_name": "User"},
            **content,
        }

    def user_sends(
        self,
        text: str,
        user_id: int = 111,
        chat_id: int | None = None,
        topic: int | None = None,
        replying_to: SentMessage | None = None,
        sent_ago: float = 0,
        forwarded_from: str | None = None,
    ) -> dict[str, Any]:
        """A text message; with `topic`, in that forum topic of the supergroup `chat_id`; `replying_to` one of
        the bot's messages; `sent_ago` seconds ago (Telegram kept it while the bot did not poll); forwarded
        from a user of that name."""
        entities = []
        if text.startswith("/"):
            command = text.split()[0]
            entities = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]
        message = self._message(
            user_id, chat_id or user_id, sent_ago, text=text, **({"entities": entities} if entities else {})
        )
        self._reply_to(message, replying_to)
        if forwarded_from is not None:
            sender = {"id": 999, "is_bot": False, "first_name": forwarded_from}
            message["forward_origin"] = {"type": "user", "date": int(time.time()) - 60, "sender_user": sender}
        if topic is not None:
            message["chat"].update(type="supergroup", is_forum=True)
            message.update(message_thread_id=topic, is_topic_message=True)
        return self._push({"message": message})["message"]

    def user_edits(self, message: dict[str, Any], text: str) -> None:
        """The user edits a message they sent (as `user_sends` returned it)."""
        self._push({"edited_message": {**message, "text": text, "edit_date": int(time.time())}})

    @staticmethod
    def _reply_to(message: dict[str, Any], replying_to: SentMessage | None) -> None:
        if replying_to is not None:
            message["reply_to_message"] = {
                "message_id": replying_to.message_id, "date": int(time.time()), "text": replying_to.text,
                "chat": message["chat"], "from": BOT_USER,
            }  # fmt: skip

    def user_sends_sticker(self, user_id: int = 111) -> None:
        sticker = {"file_id": "stk1", "file_unique_id": "u-stk1", "type": "regular", "width": 512, "height": 512,
                   "is_animated": False, "is_video": False}  # fmt: skip
        self._push({"message": self._message(user_id, user_id, sticker=sticker)})

    def user_sends_document(
        self, name: str, data: bytes, caption: str = "", user_id: int = 111, album: str | None = None
    ) -> None:
        file_id = f"doc{len(self.files)}"
        self.files[file_id] = (f"documents/{file_id}.bin", data)
        document = {"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_name": name, "file_size": len(data)}
        extra: dict[str, Any] = {"caption": caption} if caption else {}
        if album is not None:
            extra["media_group_id"] = album
        self._push({"message": self._message(user_id, user_id, document=document, **extra)})

    def user_sends_voice(
        self, data: bytes, size: int | None = None, user_id: int = 111, replying_to: SentMessage | None = None
    ) -> None:
        """A voice message; `size` is what Telegram says of it (its real size unless given)."""
        file_id = f"voice{len(self.files)}"
        self.files[file_id] = (f"voice/{file_id}.oga", data)
        voice = {"file_id": file_id, "file_unique_id": f"u-{file_id}", "duration": 2, "mime_type": "audio/ogg",
                 "file_size": len(data) if size is None else size}  # fmt: skip
        message = self._message(user_id, user_id, voice=voice)
        self._reply_to(message, replying_to)
        self._push({"message": message})

    def user_sends_photo(self, data: bytes, caption: str = "", user_id: int = 111, album: str | None = None) -> None:
        """A photo; with `album`, one of the photos sent together (each a message sharing its media_group_id)."""
        file_id = f"photo{len(self.files)}"
        self.files[file_id] = (f"photos/{file_id}.jpg", data)
        sizes = [{"file_id": file_id, "file_unique_id": f"u-{file_id}", "width": 90, "height": 90,
                  "file_size": len(data)}]  # fmt: skip
        extra: dict[str, Any] = {"caption": caption} if caption else {}
        if album is not None:
            extra["media_group_id"] = album
        self._push({"message": self._message(user_id, user_id, photo=sizes, **extra)})

    def user_presses(self, message: SentMessage, data: str, user_id: int = 111) -> None:
        callback = {
            "id": f"cb{next(self._update_ids)}",
            "from": {"id": user_id, "is_bot": False, "first_name": "User"},
            "chat_instance": "ci",
            "data": data,
            "message": {"message_id": message.message_id, "date": int(time.time()), "text": message.text,
                        "chat": {"id": message.chat_id, "type": "private"}, "from": BOT_USER},
        }  # fmt: skip
        if message.thread_id is not None:
            callback["message"]["chat"].update(type="supergroup", is_forum=True)
            callback["message"].update(message_thread_id=message.thread_id, is_topic_message=True)
        self._push({"callback_query": callback})

    def user_deletes(self, message: SentMessage) -> None:
        """The user deletes a message of the bot (bots get no update for that; later edits of it fail)."""
        message.deleted = True

    def hold(self, method: str) -> asyncio.Event:
        """Calls of `method` are answered only once the returned event is set (a slow Bot API)."""
        return self.held.setdefault(method, asyncio.Event())

    def fail_next(self, method: str, fault: Fault, times: int = 1) -> None:
        self.faults.setdefault(method, []).extend([fault] * times)

    # -- what the tests look at ---------------------------------------------------------

    def calls_of(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods]

    def texts_to(self, chat_id: int) -> list[str]:
        """The texts of the messages in a chat, as the user sees them now, oldest first."""
        return [m.text for m in self.messages.values() if m.chat_id == chat_id and not m.deleted]

    def sent_to(self, chat_id: int) -> list[SentMessage]:
        return [m for m in self.messages.values() if m.chat_id == chat_id and not m.deleted]

    async def wait_for(self, predicate: Any, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                await asyncio.sleep(0.02)

    # -- the API --------------------------------------------------------------------------

    @staticmethod
    def ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def error(status: int, description: str, retry_after: int | None = None) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return web.json_response(body, status=status)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.method == "GET":
            return dict(request.query)
        if request.content_type == "application/json":
            return await request.json()
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, str) and key in _JSON_FIELDS:
                params[key] = json.loads(value)
            else:
                params[key] = value
        return params

    async def _api(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != TOKEN:
            return self.error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method, params, time.monotonic())
        if method != "getUpdates":
            self.calls.append(call)
        if method in self.held:
            await self.held[method].wait()
        faults = self.faults.get(method)
        if faults:
            fault = faults.pop(0)
            response = self.error(fault.status, fault.description, fault.retry_after)
        else:
            handler = getattr(self, f"_m_{method}", None)
            response = self.ok(True) if handler is None else await handler(params)
        call.status = response.status
        if response.status != 200:
            call.description = json.loads(response.text or "{}").get("description", "")
        return response

    async def _m_getMe(self, params: dict[str, Any]) -> web.Response:
        return self.ok(BOT_USER)

    async def _m_getUpdates(self, params: dict[str, Any]) -> web.Response:
        if self.polled_elsewhere:
            return self.error(
                409, "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
            )
        offset = int(params.get("offset") or 0)
        if offset > 0:  # as Telegram: an offset confirms every update before it, which is then forgotten
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        timeout = float(params.get("timeout") or 0)
        deadline = time.monotonic() + timeout
        while True:
            pending = [u for u in self._updates if u["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return self.ok(pending)
            self._new_update.clear()
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    await self._new_update.wait()
            except TimeoutError:
                pass

    def _check_text(self, text: str, entities: list[dict[str, Any]], *, edit: bool) -> web.Response | None:
        if not text or not text.strip():
            return self.error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return self.error(400, "Bad Request: MESSAGE_TOO_LONG" if edit else "Bad Request: message is too long")
        size = utf16_len(text)
        for entity in entities:
            if entity["offset"] < 0 or entity["length"] <= 0 or entity["offset"] + entity["length"] > size:
                return self.error(
                    400, f"Bad Request: can't parse entities: entity beyond the end at {entity['offset']}"
                )
        return None

    async def _m_sendMessage(self, params: dict[str, Any]) -> web.Response:
        text = str(params.get("text", ""))
        entities = params.get("entities") or []
        if problem := self._check_text(text, entities, edit=False):
            return problem
        chat_id = int(params["chat_id"])
        thread = int(params["message_thread_id"]) if params.get("message_thread_id") else None
        message = SentMessage(chat_id, next(self._message_ids), text, entities, params.get("reply_markup"), thread)
        self.messages[message.message_id] = message
        return self.ok({"message_id": message.message_id, "date": int(time.time()), "text": text,
                        "chat": {"id": chat_id, "type": "private"}, "from": BOT_USER})  # fmt: skip

    async def _m_editMessageText(self, params: dict[str, Any]) -> web.Response:
        message = self.messages.get(int(params.get("message_id", 0)))
        if message is None or message.deleted:
            return self.error(400, "Bad Request: message to edit not found")
        text = str(params.get("text", ""))
        entities = params.get("entities") or []
        if problem := self._check_text(text, entities, edit=True):
            return problem
        markup = params.get("reply_markup")
        if text.rstrip() == message.text.rstrip() and entities == message.entities and markup == message.reply_markup:
            return self.error(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are exactly "
                "the same as a current content and reply markup of the message",
            )
        message.text, message.entities, message.reply_markup = text, entities, markup
        message.edits.append(time.monotonic())
        return self.ok({"message_id": message.message_id, "date": int(time.time()), "text": text,
                        "chat": {"id": message.chat_id, "type": "private"}, "from": BOT_USER})  # fmt: skip

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> web.Response:
        message = self.messages.get(int(params.get("message_id", 0)))
        if message is None or message.deleted:
            return self.error(400, "Bad Request: message to edit not found")
        if params.get("reply_markup") == message.reply_markup:
            return self.error(400, "Bad Request: message is not modified")
        message.reply_markup = params.get("reply_markup")
        message.edits.append(time.monotonic())
        return self.ok({"message_id": message.message_id, "date": int(time.time()), "text": message.text,
                        "chat": {"id": message.chat_id, "type": "private"}, "from": BOT_USER})  # fmt: skip

    async def _m_deleteMessage(self, params: dict[str, Any]) -> web.Response:
        message = self.messages.get(int(params.get("message_id", 0)))
        if message is None or message.deleted:
            return self.error(400, "Bad Request: message to delete not found")
        message.deleted = True
        return self.ok(True)

    async def _m_sendMessageDraft(self, params: dict[str, Any]) -> web.Response:
        if not self.drafts_supported:
            return self.error(404, "Not Found")
        if not int(params.get("draft_id", 0)):
            return self.error(400, "Bad Request: draft_id must be non-zero")
        if problem := self._check_text(str(params.get("text", "")), params.get("entities") or [], edit=False):
            return problem
        return self.ok(True)

    async def _upload(self, params: dict[str, Any], field_name: str) -> web.Response:
        """sendPhoto, sendDocument: the file as the bot uploaded it, kept in `uploads`."""
        upload = params.get(field_name)
        if not isinstance(upload, web.FileField):
            return self.error(400, f"Bad Request: there is no {field_name} in the request")
        thread = int(params["message_thread_id"]) if params.get("message_thread_id") else None
        self.uploads.append(Upload(field_name, int(params["chat_id"]), upload.filename, upload.file.read(),
                                   str(params.get("caption") or ""), thread))  # fmt: skip
        return self.ok({"message_id": next(self._message_ids), "date": int(time.time()),
                        "chat": {"id": int(params["chat_id"]), "type": "private"}, "from": BOT_USER})  # fmt: skip

    async def _m_sendPhoto(self, params: dict[str, Any]) -> web.Response:
        return await self._upload(params, "photo")

    async def _m_sendDocument(self, params: dict[str, Any]) -> web.Response:
        return await self._upload(params, "document")

    async def _m_getFile(self, params: dict[str, Any]) -> web.Response:
        file_id = str(params.get("file_id"))
        if file_id not in self.files:
            return self.error(400, "Bad Request: invalid file_id")
        path, data = self.files[file_id]
        return self.ok(
            {"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_size": len(data), "file_path": path}
        )

    async def _file(self, request: web.Request) -> web.Response:
        for path, data in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=data)
        return web.Response(status=404)
