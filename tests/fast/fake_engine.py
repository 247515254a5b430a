"""A stand-in for the engine with the same public API, whose turns yield scripted face events.

The faces are driven through exactly what they use of `core.Engine` and `core.Turn`, with
no CLI behind them: each turn takes the next script of `FakeEngine.scripts`, a list of
steps. A step is a face event (yielded), an exception (raised), `Refuse(error)` as the
first step (entering the turn fails), `Pause(seconds)`, `HANG` (wait until the turn is cancelled), or
`ClientToolsPending` (yielded; the turn then waits for `continue_with`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from core import (
    Approvals,
    CancelReason,
    ClientToolCall,
    ClientToolsPending,
    Finished,
    SessionStore,
    Settings,
    SubscriptionLimits,
    TurnCancelled,
    TurnEvent,
    TurnRequest,
    Usage,
)


@dataclass(frozen=True)
class Refuse:
    error: BaseException


@dataclass(frozen=True)
class Pause:
    seconds: float


HANG = object()
Step = Any  # TurnEvent | BaseException | Refuse | HANG


class FakePool:
    size = 0
    spares = 0

    def pids(self) -> set[int]:
        return set()

    def evict(self, key: str, why: str = "") -> None:
        pass


@dataclass(eq=False)
class FakeTurn:
    engine: FakeEngine
    request: TurnRequest
    steps: list[Step]
    key: str = ""
    outcome: str = "started"
    started: float = field(default_factory=time.monotonic)
    first_token_after: float | None = None
    last_tool: str = ""
    awaiting_client: tuple[ClientToolCall, ...] = ()
    results: list[dict[str, tuple[str, bool]]] = field(default_factory=list)  # what continue_with was given
    cancelled: CancelReason | None = None
    _finished: Finished | None = None
    _cancel: asyncio.Event = field(default_factory=asyncio.Event)
    _resumed: asyncio.Event = field(default_factory=asyncio.Event)

    model_answering = "claude-fake-1"
    asking = None

    @property
    def model_label(self) -> str:
        return self.request.model_asked or self.model_answering

    @property
    def usage(self) -> Usage | None:
        return self._finished.usage if self._finished else None

    @property
    def cost_usd(self) -> float:
        return self._finished.cost_usd if self._finished else 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def __aenter__(self) -> FakeTurn:
        self.key = self.request.key or f"{self.request.face}:fake"
        if self.steps and isinstance(self.steps[0], Refuse):
            self.outcome = "refused"
            raise self.steps[0].error
        self.engine.turns.add(self)
        return self

    async def __aexit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        self.engine.turns.discard(self)
        if self.outcome == "started":
            self.outcome = "ok" if self._finished else "cancelled" if error is None else type(error).__name__
        for listener in self.engine.listeners:
            await listener(self, error)

    def __aiter__(self) -> AsyncIterator[TurnEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[TurnEvent]:
        for step in self.steps:
            if self.cancelled is not None:
                raise TurnCancelled(self.cancelled)
            if step is HANG:
                await self._cancel.wait()
                raise TurnCancelled(self.cancelled or CancelReason.STOPPED)
            if isinstance(step, BaseException):
                raise step
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
                continue
            if isinstance(step, Finished):
                self._finished = step
            if isinstance(step, ClientToolsPending):
                self.awaiting_client = step.calls
                yield step
                await self._resumed.wait()
                self._resumed.clear()
                continue
            if self.first_token_after is None:
                self.first_token_after = self.elapsed
            yield step
            await asyncio.sleep(0)

    async def continue_with(self, results: dict[str, tuple[str, bool]], *, head_after: Callable[[str], Any]) -> None:
        self.answer_client_calls(results)

    def answer_client_calls(self, results: dict[str, tuple[str, bool]]) -> None:
        self.results.append(results)
        self.awaiting_client = ()
        self._resumed.set()

    async def cancel(self, reason: CancelReason) -> None:
        self.cancelled = reason
        self._cancel.set()


class FakeEngine:
    """Build with `FakeEngine.factory(scripts)`, hand it to `compose(settings, engine=...)`."""

    def __init__(self, settings: Settings, scripts: list[list[Step]]) -> None:
        self.settings = settings
        self.store = SessionStore(settings.state_dir)
        self.scripts = scripts
        self.requests: list[TurnRequest] = []
        self.started: list[FakeTurn] = []
        self.turns: set[FakeTurn] = set()
        self.listeners: list[Callable[[Any, BaseException | None], Awaitable[None]]] = []
        self.pool = FakePool()
        self.approvals = Approvals(600)
        self.waiting = 0
        self.waiting_for_conversation = 0
        self.limits = SubscriptionLimits()

    @classmethod
    def factory(cls, scripts: list[list[Step]], built: list[FakeEngine]) -> Callable[[Settings], FakeEngine]:
        def build(settings: Settings) -> FakeEngine:
            engine = cls(settings, scripts)
            built.append(engine)
            return engine

        return build

    async def __aenter__(self) -> FakeEngine:
        await self.store.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def running(self) -> int:
        return sum(1 for t in self.turns if not t.awaiting_client)

    @property
    def waiting_for_clients(self) -> int:
        return len(self.turns) - self.running

    def on_turn_end(self, listener: Callable[[Any, BaseException | None], Awaitable[None]]) -> None:
        self.listeners.append(listener)

    def turn(self, request: TurnRequest) -> FakeTurn:
        self.requests.append(request)
        steps = self.scripts.pop(0) if self.scripts else [RuntimeError("the fake engine has no script left")]
        turn = FakeTurn(self, request, list(steps))
        self.started.append(turn)
        return turn

    async def forget(self, key: str) -> bool:
        return await self.store.forget(key)

    async def cancel_all(self, reason: CancelReason) -> None:
        for turn in list(self.turns):
            await turn.cancel(reason)

    async def drain(self, grace: float) -> None:
        pass

    async def shut_down(self) -> None:
        await self.cancel_all(CancelReason.SHUTDOWN)

    async def close(self) -> None:
        await self.shut_down()
        await self.store.close()
