"""Images for Claude: checked (type, size, that the bytes are what they claim) and made content blocks."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from core.errors import BadImage

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # what the Anthropic API takes per image
_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


def image_block(media_type: str, data: str) -> dict[str, Any]:
    """A content block from base64 `data` that claims to be `media_type`."""
    media_type = media_type.lower()
    if media_type not in _MAGIC:
        raise BadImage(f"image type {media_type} is not supported; use PNG, JPEG, GIF or WebP")
    if len(data) * 3 // 4 > MAX_IMAGE_BYTES:
        raise BadImage(f"an image may be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("an image's base64 data is not valid") from None
    if not raw.startswith(_MAGIC[media_type]):
        raise BadImage(f"the image data is not a valid {media_type.split('/')[1].upper()} image")
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def image_block_from_bytes(media_type: str, raw: bytes) -> dict[str, Any]:
    return image_block(media_type, base64.b64encode(raw).decode())
