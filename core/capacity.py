"""What turns share: the CLI slots (MAX_CONCURRENT) and one lock per conversation.

The engine builds one of each and hands them to every turn it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from core.config import RETRY_AFTER_SECONDS
from core.errors import Saturated


class Slots:
    """At most `size` CLIs at work at once; turns wait for a slot in arrival order, whichever face sent them."""

    def __init__(self, size: int, *, queue_wait: float) -> None:
        self.size = size
        self._queue_wait = queue_wait
        self._semaphore = asyncio.Semaphore(size)
        self.waiting = 0  # turns waiting for a slot now

    async def acquire(self, *, patient: bool, on_queued: Callable[[], None] | None = None) -> None:
        """Take a slot. An impatient turn (an HTTP client, which can retry) gives up after QUEUE_WAIT with
        `Saturated`; a patient one (a chat, whose user waits anyway) waits as long as it takes."""
        self.waiting += 1
        try:
            if self._semaphore.locked() and on_queued is not None:
                on_queued()
            async with asyncio.timeout(None if patient else self._queue_wait):
                await self._semaphore.acquire()
        except TimeoutError:
            raise Saturated(
                f"all {self.size} Claude Code slots are busy; try again shortly", retry_after=RETRY_AFTER_SECONDS
            ) from None
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._semaphore.release()


class ConversationLocks:
    """One turn at a time per conversation; a lock exists only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self.waiting = 0  # turns waiting for their conversation's previous turn now

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, wait: float | None = None) -> AsyncIterator[None]:
        """Hold the conversation; wait for its previous turn at most `wait` seconds (None: as long as it
        takes), then `Saturated`."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            queued = int(lock.locked())
            self.waiting += queued
            try:
                async with asyncio.timeout(wait):
                    await lock.acquire()
            except TimeoutError:
                raise Saturated(
                    f"the conversation's previous turn is still running after {wait:g} s; try again when it is done",
                    retry_after=RETRY_AFTER_SECONDS,
                ) from None
            finally:
                self.waiting -= queued
            try:
                yield
            finally:
                lock.release()
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
