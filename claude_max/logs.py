"""Logging: one line per event, `key=value` pairs, and never a secret."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

_TOKEN_IN_URL = re.compile(r"/bot\d+:[A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what could forge a line or steer a terminal (tab is fine)


def _escaped(match: re.Match[str]) -> str:
    return {"\n": "\\n", "\r": "\\r"}.get(match.group(), f"\\x{ord(match.group()):02x}")


class RedactingFilter(logging.Filter):
    """Masks configured secrets, and Telegram bot tokens in URLs, in every record, and escapes control
    characters, so that no logged value (a client's conversation id, a URL path) can forge a line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN_IN_URL.sub("/bot<redacted>", message)
        for secret in self._secrets:
            redacted = redacted.replace(secret, "<redacted>")
        redacted = _CONTROL.sub(_escaped, redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(*, debug: bool, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s event=%(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # httpx logs request URLs at INFO, and Telegram's contain the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
