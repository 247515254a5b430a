"""Files sent to the bot: saved under the working directory with safe names, within size limits."""

from __future__ import annotations

import re
import time
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadRefused(ValueError):
    """The file cannot be taken; the message says why, for the user."""


def safe_name(name: str | None, default: str = "file") -> str:
    """A file name with no directories, no leading dots and only harmless characters."""
    base = (name or "").replace("\\", "/").split("/")[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._-")[:100]
    return cleaned or default


def upload_path(workdir: Path, chat_id: int, name: str | None, default: str = "file", message_id: int = 0) -> Path:
    """Where an upload is saved: `uploads/<chat>/<time>-<message id>-<safe name>` (the photos of an album
    arrive in the same second, all named photo.jpg)."""
    folder = (workdir / "uploads" / str(chat_id)).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{message_id}-{safe_name(name, default)}").resolve()
    if path.parent != folder:  # cannot happen with safe_name; a last guard against traversal
        raise UploadRefused("that file name is not allowed")
    return path


def check_size(size: int | None, limit_mb: float) -> None:
    if size is not None and size > limit_mb * 1024 * 1024:
        shown = f"{size / 1024 / 1024:.1f}"
        if float(shown) <= limit_mb:  # (just over the limit: enough digits to see it is over)
            shown = f"{size / 1024 / 1024:.6f}".rstrip("0")
        raise UploadRefused(f"that file is {shown} MB; the limit is {limit_mb:g} MB")
