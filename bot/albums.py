"""Uploads as prompts, and an album (photos or files sent together) as one turn.

Telegram delivers each item of an album as a message of its own, sharing a `media_group_id`, within
moments of each other, with the caption on one of them. The bot collects the items until each has
been downloaded and none has come for `ALBUM_WAIT` seconds, then queues one prompt with all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telegram import Update

from core import Prompt

ALBUM_WAIT = 1.0  # seconds of quiet after an album's last item before its turn is queued


@dataclass(frozen=True)
class Upload:
    message_id: int
    kind: str  # "photo" or "file"
    path: Path
    caption: str = ""
    image: dict[str, Any] | None = None  # the picture itself, for Claude to see


def upload_prompt(uploads: list[Upload]) -> Prompt:
    """What Claude is told of files the user sent: the captions, where each was saved, and the pictures."""
    uploads = sorted(uploads, key=lambda u: u.message_id)
    captions = [u.caption for u in uploads if u.caption]
    if len(uploads) == 1:
        note = f"[The user sent a {uploads[0].kind}, saved at {uploads[0].path}]"
        ask = "Look at it and tell me what it is."
    else:
        kinds = "photos" if all(u.kind == "photo" for u in uploads) else "files"
        note = f"[The user sent {len(uploads)} {kinds} together, saved at:\n" + "\n".join(
            f"- {u.path}" for u in uploads
        ) + "]"  # fmt: skip
        ask = "Look at them and tell me what they are."
    text = "\n\n".join([*captions, note]) if captions else f"{note}\n{ask}"
    images = [u.image for u in uploads if u.image is not None]
    return [{"type": "text", "text": text}, *images] if images else text


@dataclass
class _Album:
    first: Update  # the item the turn's answer replies to
    first_id: int
    uploads: list[Upload] = field(default_factory=list)
    downloading: int = 0
    timer: asyncio.Task[None] | None = None


class Albums:
    """Albums being received, by chat and media group; `send` queues a finished album's prompt."""

    def __init__(self, send: Callable[[Update, Prompt], Awaitable[None]]) -> None:
        self._send = send
        self._open: dict[str, _Album] = {}

    def expect(self, key: str, update: Update, message_id: int) -> None:
        """An item of the album arrived and is being downloaded."""
        album = self._open.setdefault(key, _Album(update, message_id))
        if message_id < album.first_id:
            album.first, album.first_id = update, message_id
        album.downloading += 1
        if album.timer is not None:
            album.timer.cancel()
            album.timer = None

    def add(self, key: str, upload: Upload | None) -> None:
        """The item is downloaded (None: it could not be taken, and the user was told)."""
        album = self._open[key]
        album.downloading -= 1
        if upload is not None:
            album.uploads.append(upload)
        if album.downloading == 0:
            album.timer = asyncio.create_task(self._close(key))

    async def _close(self, key: str) -> None:
        await asyncio.sleep(ALBUM_WAIT)
        album = self._open.pop(key)
        if album.uploads:
            await self._send(album.first, upload_prompt(album.uploads))

    async def stop(self) -> None:
        """Drop albums still being received (the daemon is going away)."""
        for album in self._open.values():
            if album.timer is not None:
                album.timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await album.timer
        self._open.clear()
