"""Files back: Claude sends a file of the project to the chat through the daemon's own MCP tool.

The bot offers the tool `send_file` on a server named `telegram` (Claude sees
`mcp__telegram__send_file`) in its turns, as the engine offers any client's tools; when Claude
calls it, the bot sends the file and hands the CLI the result. Only files inside the turn's
project directory go; Telegram's size limits are checked before anything is uploaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

from telegram import Bot, InputFile
from telegram.error import TelegramError
from telegramify_markdown.entity import utf16_len

from bot.render import utf16_head
from core import ClientTool, ToolActivity

log = logging.getLogger("bot.files_back")

SERVER = "telegram"
SEND_FILE = ClientTool(
    name="send_file",
    mcp_name="send_file",
    description=(
        "Send a file from the project to the user's Telegram chat (images as photos, other files as documents). "
        "`path` is relative to the project directory, or absolute inside it; `caption` is an optional short text."
    ),
    schema={
        "type": "object",
        "properties": {"path": {"type": "string"}, "caption": {"type": "string"}},
        "required": ["path"],
    },
)
NOTE = "(You are answering in a Telegram chat; the send_file tool sends the user a file from the project.)"

MB = 1024 * 1024
PHOTO_LIMIT = 10 * MB  # Telegram's sendPhoto
DOCUMENT_LIMIT = 50 * MB  # what a bot may upload
CAPTION_LIMIT = 1024
PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def target(workdir: Path, arguments: str) -> tuple[Path, str]:
    """The file a call asks for, inside `workdir`, and its caption; ValueError says what is wrong."""
    try:
        given = json.loads(arguments)
    except ValueError:
        raise ValueError("the tool's input is not JSON") from None
    path, caption = (given.get("path"), given.get("caption") or "") if isinstance(given, dict) else (None, "")
    if not isinstance(path, str) or not path.strip() or not isinstance(caption, str):
        raise ValueError("give `path` (a file of the project) and, if you like, `caption` as text")
    root = workdir.resolve()
    found = (workdir / path).resolve()  # (an absolute path stays as it is)
    if not found.is_relative_to(root):
        raise ValueError(f"{path} is outside the project directory {root}; only the project's files can be sent")
    if not found.is_file():
        raise ValueError(f"there is no file {path} in the project")
    return found, fitted_caption(caption)


def described(arguments: str, *, sent: bool) -> ToolActivity:
    """A send_file call as the status message and the turn's tool log show it (one that sent nothing
    marked so)."""
    what = "📎 send_file"
    with contextlib.suppress(ValueError):
        given = json.loads(arguments)
        if isinstance(given, dict) and isinstance(given.get("path"), str):
            what += f": {given['path']}"
    return ToolActivity("send_file", what if sent else f"⚠️ {what} (not sent)")


def fitted_caption(caption: str) -> str:
    """A caption within Telegram's 1024 characters (counted in UTF-16 units), cut with an ellipsis."""
    return caption if utf16_len(caption) <= CAPTION_LIMIT else utf16_head(caption, CAPTION_LIMIT - 1) + "…"


async def send_file(bot: Bot, chat_id: int, thread_id: int | None, workdir: Path, arguments: str) -> tuple[str, bool]:
    """Send the file a call names; (the tool's result for Claude, whether it is an error)."""
    try:
        path, caption = target(workdir, arguments)
    except ValueError as exc:
        return f"Not sent: {exc}.", True
    size = path.stat().st_size
    photo = path.suffix.lower() in PHOTO_SUFFIXES and size <= PHOTO_LIMIT
    if size > DOCUMENT_LIMIT:
        return f"Not sent: {path.name} is {size / MB:.1f} MB; Telegram takes at most 50 MB from a bot.", True
    if size == 0:
        return f"Not sent: {path.name} is empty, and Telegram does not take empty files.", True
    upload = InputFile(await asyncio.to_thread(path.read_bytes), filename=path.name)
    try:
        if photo:
            await bot.send_photo(chat_id, upload, caption=caption or None, message_thread_id=thread_id)
        else:
            await bot.send_document(chat_id, upload, caption=caption or None, message_thread_id=thread_id)
    except TelegramError as exc:
        log.warning("send_file_failed chat=%s error=%s", chat_id, exc.message)
        return f"Not sent: Telegram refused it ({exc.message}).", True
    log.info("send_file chat=%s bytes=%d as=%s", chat_id, size, "photo" if photo else "document")
    return f"Sent {path.name} to the chat as a {'photo' if photo else 'document'}.", False
