"""CLI processes kept alive between turns, so the next turn skips the CLI's start-up.

A warm process belongs to one conversation and holds its session; it is reused only for
the same session with the same settings (model, permission mode, working directory ...).
At most `capacity` wait at once (each costs about 200 MB); the least recently used goes
first, and any that waits longer than `idle_seconds` is stopped. Spares are processes
started ahead for new conversations of the default model.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from core.process import CLIProcess

log = logging.getLogger("core.warm")

Signature = tuple[Hashable, ...]


@dataclass
class _Warm:
    process: CLIProcess
    session_id: str
    signature: Signature
    timer: asyncio.TimerHandle | None = None


class WarmPool:
    def __init__(
        self,
        *,
        capacity: int,
        idle_seconds: float,
        spares: int,
        background: Callable[[Awaitable[None]], object],
    ) -> None:
        self.capacity = capacity
        self.idle_seconds = idle_seconds
        self.spare_target = spares
        self._background = background
        self._warm: OrderedDict[str, _Warm] = OrderedDict()
        self._spares: list[tuple[CLIProcess, Signature]] = []
        self._spawning = 0
        self.closed = False

    @property
    def size(self) -> int:
        return len(self._warm)

    @property
    def spares(self) -> int:
        return len(self._spares)

    def pids(self) -> set[int]:
        """The waiting processes (each leads its own process group)."""
        processes = [entry.process for entry in self._warm.values()] + [p for p, _ in self._spares]
        return {p.pid for p in processes if p.pid is not None}

    def _discard(self, process: CLIProcess, why: str) -> None:
        log.debug("warm_discard pid=%s why=%s", process.pid, why)
        self._background(process.stop())

    def take(self, key: str, session_id: str, signature: Signature) -> CLIProcess | None:
        """The conversation's warm process, if it holds this session with these settings and still runs."""
        entry = self._warm.pop(key, None)
        if entry is None:
            return None
        if entry.timer is not None:
            entry.timer.cancel()
        if entry.session_id != session_id or entry.signature != signature or not entry.process.alive:
            self._discard(entry.process, "stale")
            return None
        return entry.process

    def put(self, key: str, process: CLIProcess, session_id: str, signature: Signature) -> None:
        """Keep a process that just finished a turn, for that conversation's next turn."""
        if self.closed or self.capacity == 0 or not process.alive:
            self._discard(process, "not kept")
            return
        old = self._warm.pop(key, None)
        if old is not None and old.process is not process:
            self._discard(old.process, "replaced")
        entry = _Warm(process, session_id, signature)
        entry.timer = asyncio.get_running_loop().call_later(self.idle_seconds, self.evict, key, "idle")
        self._warm[key] = entry
        while len(self._warm) > self.capacity:
            oldest = next(iter(self._warm))
            self.evict(oldest, "over capacity")

    def evict(self, key: str, why: str = "evicted") -> None:
        entry = self._warm.pop(key, None)
        if entry is not None:
            if entry.timer is not None:
                entry.timer.cancel()
            self._discard(entry.process, why)

    # -- spares ------------------------------------------------------------------------------

    def take_spare(self, signature: Signature) -> CLIProcess | None:
        for index, (process, spare_signature) in enumerate(self._spares):
            if spare_signature == signature and process.alive:
                del self._spares[index]
                return process
        return None

    def refill(self, start: Callable[[], Awaitable[tuple[CLIProcess, Signature]]]) -> None:
        """Start spares in the background until there are `spare_target` of them."""
        self._spares = [(p, s) for p, s in self._spares if p.alive]
        missing = self.spare_target - len(self._spares) - self._spawning
        for _ in range(max(missing, 0)):
            self._spawning += 1
            self._background(self._start_spare(start))

    async def _start_spare(self, start: Callable[[], Awaitable[tuple[CLIProcess, Signature]]]) -> None:
        try:
            process, signature = await start()
        except Exception as exc:
            log.warning("spare_failed error=%s", exc)
            return
        finally:
            self._spawning -= 1
        if self.closed:
            await process.stop()
            return
        self._spares.append((process, signature))

    async def close(self) -> None:
        self.closed = True
        processes = [entry.process for entry in self._warm.values()] + [p for p, _ in self._spares]
        for entry in self._warm.values():
            if entry.timer is not None:
                entry.timer.cancel()
        self._warm.clear()
        self._spares.clear()
        await asyncio.gather(*(p.stop() for p in processes), return_exceptions=True)
