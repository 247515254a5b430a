"""Logging: one line per event, `key=value` pairs, and never a secret."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable

_TOKEN_IN_URL = re.compile(r"/bot\d+:[A-Za-z0-9_-]+")
FRAGMENT = 8  # the shortest piece of a secret masked on its own (DEBUG only)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what could forge a line or steer a terminal (tab is fine)


def _escaped(match: re.Match[str]) -> str:
    return {"\n": "\\n", "\r": "\\r"}.get(match.group(), f"\\x{ord(match.group()):02x}")


class RedactingFilter(logging.Filter):
    """Masks configured secrets, and Telegram bot tokens in URLs, in every record, and escapes control
    characters, so that no logged value (a client's conversation id, a URL path) can forge a line."""

    def __init__(self, secrets: Iterable[str], *, fragments: bool = False) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        # With DEBUG, the CLI's events are logged one by one, and a secret the agent printed can be split
        # across two text deltas: each line then holds a beginning or an end of it, masked too.
        pieces = {
            piece
            for secret in self._secrets if fragments and len(secret) > FRAGMENT
            for n in range(FRAGMENT, len(secret))
            for piece in (secret[:n], secret[-n:])
        }  # fmt: skip
        self._fragments = re.compile("|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True)))
        self._has_fragments = bool(pieces)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN_IN_URL.sub("/bot<redacted>", message)
        for secret in self._secrets:
            redacted = redacted.replace(secret, "<redacted>")
        if self._has_fragments:
            redacted = self._fragments.sub("<redacted>", redacted)
        redacted = _CONTROL.sub(_escaped, redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(*, debug: bool, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s event=%(message)s"))
    handler.addFilter(RepeatFilter())
    handler.addFilter(RedactingFilter(secrets, fragments=debug))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # httpx logs request URLs at INFO, and Telegram's contain the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


class RepeatFilter(logging.Filter):
    """One line for a burst of the same event: a record whose logger and message template were just logged
    is held back for `quiet` seconds, and the next one that passes says how many were held. (A flood of
    `accept()` errors when file descriptors run out wrote 62 MB in 6 s.) Tracebacks of the same error
    collapse the same way."""

    def __init__(self, quiet: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._quiet = quiet
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # (events of normal operation repeat by nature)
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last, held = self._seen.get(key, (-self._quiet - 1.0, 0))
        if now - last < self._quiet:
            self._seen[key] = (last, held + 1)
            return False
        self._seen[key] = (now, 0)
        if len(self._seen) > 1024:  # forget the oldest kinds
            for stale in sorted(self._seen, key=lambda k: self._seen[k][0])[:512]:
                del self._seen[stale]
        if held:
            record.msg = f"{record.getMessage()} (and {held} more like it in the last {self._quiet:g} s)"
            record.args = None
        return True
