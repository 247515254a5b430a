"""The engine: turns on Claude Code sessions, shared by every face of the daemon.

A face builds a `TurnRequest`, enters `engine.turn(request)` and iterates the turn's
events (`core.turn`). The engine owns what turns share: the session store, the CLI slots,
the conversation locks, the launch spec with its warm pool, and the tracker of running
turns, and hands them to each turn it starts. It resumes the conversation's session when
it can, starts a fresh one carrying the history when it cannot, and never leaves a
process behind: `close()` cancels what runs and waits until every process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import uuid
from pathlib import Path

from core.approvals import Approvals
from core.capacity import ConversationLocks, Slots
from core.cli_sessions import SessionSummary, config_dir, recent_sessions
from core.config import Settings
from core.errors import CancelReason, ShuttingDown, StoreError
from core.hygiene import INSTANCE_VARIABLE, STATE_VARIABLE, StateLock, reap_leftovers, state_key
from core.launcher import Launcher
from core.limits import SubscriptionLimits
from core.store import SessionStore
from core.turn import Turn, TurnContext, TurnListener, TurnRequest, TurnTracker
from core.warm import WarmPool


class EngineState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    DRAINING = "draining"  # running turns may finish; no new ones start
    STOPPING = "stopping"  # running turns are being cancelled
    CLOSED = "closed"


class Engine:
    """Build once per daemon; `async with Engine(settings) as engine:` opens the store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SessionStore(settings.state_dir)
        self.state = EngineState.NEW
        self.instance = uuid.uuid4().hex
        self._state_lock = StateLock(settings.state_dir)
        self._state_key = state_key(settings.state_dir)
        self._tracker = TurnTracker()
        self._launcher = Launcher(
            settings,
            marks={STATE_VARIABLE: self._state_key, INSTANCE_VARIABLE: self.instance},
            background=self._tracker.background,
        )
        self._slots = Slots(settings.max_concurrent, queue_wait=settings.queue_wait)
        self._locks = ConversationLocks()
        # The subscription's windows, as the CLI last reported them, and what follows from them.
        self.limits = SubscriptionLimits(settings.limit_warn_at, settings.limit_fallback)
        # Permission prompts of `ask` turns; a face that can ask a person registers with it.
        self.approvals = Approvals(settings.approval_timeout)
        self._context = TurnContext(
            settings=settings, store=self.store, slots=self._slots, locks=self._locks, limits=self.limits,
            launcher=self._launcher, approvals=self.approvals, tracker=self._tracker,
        )  # fmt: skip

    async def __aenter__(self) -> Engine:
        if self.state is not EngineState.NEW:
            raise RuntimeError(f"engine is {self.state.value}; build a new one")
        try:
            self.settings.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the working directory {self.settings.workdir} (CLAUDE_WORKDIR): {exc}"
            ) from exc
        self._state_lock.acquire()
        try:
            await self.store.open()
            self.limits.load(await self.store.limits())  # what the CLI last said, before the restart
        except BaseException:
            self._state_lock.release()
            raise
        reap_leftovers(self._state_key, self.instance)
        self.state = EngineState.OPEN
        self._launcher.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pool(self) -> WarmPool:
        """The warm processes (for /health and the metrics)."""
        return self._launcher.pool

    @property
    def running(self) -> int:
        """Turns in progress; a turn waiting for a client's tool results is not one (it holds no slot)."""
        return sum(1 for turn in self._tracker.turns if not turn.awaiting_client)

    @property
    def waiting_for_clients(self) -> int:
        """Turns waiting for a client's tool results."""
        return len(self._tracker.turns) - self.running

    @property
    def waiting(self) -> int:
        """Turns waiting for a CLI slot."""
        return self._slots.waiting

    @property
    def waiting_for_conversation(self) -> int:
        """Turns waiting for their conversation's previous turn to end."""
        return self._locks.waiting

    def on_turn_end(self, listener: TurnListener) -> None:
        """Call `listener(turn, error)` after every turn, in the background (alerts, metrics)."""
        self._tracker.listeners.append(listener)

    def turn(self, request: TurnRequest) -> Turn:
        """A turn to enter. Raises `ShuttingDown` while draining or stopping, `RuntimeError` when not open."""
        if self.state in (EngineState.DRAINING, EngineState.STOPPING):
            raise ShuttingDown(CancelReason.SHUTDOWN.value)
        if self.state is not EngineState.OPEN:
            raise RuntimeError(f"engine is {self.state.value}")
        return Turn(self._context, request)

    async def forget(self, key: str) -> bool:
        """Drop a conversation: its session mapping and its warm process."""
        self.pool.evict(key, "forgotten")
        return await self.store.forget(key)

    async def adopt(self, key: str, session_id: str, workdir: Path) -> None:
        """Make a conversation continue a session of the CLI in `workdir` (e.g. one begun in a terminal)."""
        self.pool.evict(key, "replaced")
        await self.store.adopt(key, session_id, str(workdir))

    async def sessions_in(self, workdir: Path, limit: int = 8) -> list[SessionSummary]:
        """The CLI's newest sessions of a directory (also those a terminal's `claude` began), newest first."""
        config = config_dir(self.settings.child_environment())
        return await asyncio.to_thread(recent_sessions, config, workdir, limit)

    async def cancel_all(self, reason: CancelReason) -> None:
        """Stop every running turn; their consumers see `TurnCancelled`."""
        await asyncio.gather(*(turn.cancel(reason) for turn in list(self._tracker.turns)))

    async def drain(self, grace: float) -> None:
        """Refuse new turns and give the running ones up to `grace` seconds to finish."""
        if self.state is EngineState.OPEN:
            self.state = EngineState.DRAINING
            self._launcher.accepting = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._tracker.idle.wait()

    async def shut_down(self) -> None:
        """Refuse new turns and cancel the running ones; the store stays open until `close()`."""
        if self.state in (EngineState.OPEN, EngineState.DRAINING):
            self.state = EngineState.STOPPING
            self._launcher.accepting = False
        await self.cancel_all(CancelReason.SHUTDOWN)

    async def close(self) -> None:
        if self.state is EngineState.CLOSED:
            return
        await self.shut_down()
        tracker = self._tracker
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.kill_grace + 5):
                while tracker.turns or tracker.finishing:  # consumers are leaving their turns
                    await asyncio.gather(*tracker.finishing, return_exceptions=True)
                    await asyncio.sleep(0.01)
        self.state = EngineState.CLOSED
        await self._launcher.close()
        await self.store.close()
        self._state_lock.release()
