"""Calling Telegram without letting its errors reach a turn.

`send()` retries what is worth retrying (network errors, and flood control after the
`retry_after` Telegram asks for) and gives up quietly on what is not (the message to
edit is gone, the user blocked the bot, ...). Every failure is logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from telegram import Bot
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

log = logging.getLogger("bot.calls")


class _HandledFloodControl(logging.Filter):
    """PTB's rate limiter, told not to retry (`send()` does), logs every 429 as an error with a traceback
    before raising it; `send()` handles it and logs one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Rate limit hit after maximum")


def quiet_handled_flood_control() -> None:
    limiter = logging.getLogger("telegram.ext.AIORateLimiter")
    if not any(isinstance(f, _HandledFloodControl) for f in limiter.filters):
        limiter.addFilter(_HandledFloodControl())


T = TypeVar("T")

MAX_FLOOD_WAIT = 120.0  # never wait longer than this for one call


def retry_after_seconds(error: RetryAfter) -> float:
    value = error.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def is_not_modified(error: TelegramError) -> bool:
    return "not modified" in error.message.lower()


def _worth_retrying(error: BaseException) -> bool:
    if isinstance(error, RetryAfter):
        return retry_after_seconds(error) <= MAX_FLOOD_WAIT
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


_backoff = wait_exponential(multiplier=0.5, max=8)


def _wait(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, RetryAfter):
        return retry_after_seconds(error) + 0.1
    return _backoff(state)


def _log_wait(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryAfter):
            log.info("telegram_flood call=%s retry_after=%.0f", what, retry_after_seconds(error))
        else:
            log.info("telegram_retry call=%s attempt=%d error=%s", what, state.attempt_number, error)

    return before_sleep


async def send(what: str, call: Callable[[], Awaitable[T]], *, attempts: int = 4) -> T | None:
    """Run one Bot API call with retries; None if it failed for good."""
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_worth_retrying),
            wait=_wait,
            stop=stop_after_attempt(attempts),
            reraise=True,
            before_sleep=_log_wait(what),
        ):
            with attempt:
                return await call()
    except BadRequest as exc:
        if not is_not_modified(exc):
            log.warning("telegram_refused call=%s error=%s", what, exc.message)
    except Forbidden as exc:
        log.warning("telegram_forbidden call=%s error=%s", what, exc.message)
    except TelegramError as exc:
        log.warning("telegram_failed call=%s error=%s", what, exc.message)
    return None


TYPING_EVERY = 4.0  # seconds: Telegram shows "typing…" for about 5 s after each chat action


@contextlib.asynccontextmanager
async def typing(bot: Bot, chat_id: int, thread_id: int | None = None) -> AsyncIterator[None]:
    """Show "typing…" in the chat (its topic) for as long as the block runs."""

    async def keep_typing() -> None:
        while True:
            with contextlib.suppress(TelegramError):
                await bot.send_chat_action(chat_id, ChatAction.TYPING, message_thread_id=thread_id)
            await asyncio.sleep(TYPING_EVERY)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
