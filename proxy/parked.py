"""Turns waiting for the client's tool results, between one HTTP request and the next.

When Claude calls the client's tools, the answer to the first request ends with
`tool_calls`; the CLI meanwhile waits in the middle of its turn. The turn is parked here
under the fingerprint of the history the client will send back (the assistant message
with those calls included), and the next request that brings the results takes it and
goes on reading the same turn. A turn nobody comes back for within TOOL_RESULT_TIMEOUT
gets error results, runs to its end unread, and lets its conversation go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from core.client_tools import ClientToolCall, ClientToolsPending
from core.engine import Turn, TurnEvent

log = logging.getLogger("proxy.parked")


@dataclass
class ParkedTurn:
    turn: Turn
    events: AsyncIterator[TurnEvent]
    calls: tuple[ClientToolCall, ...]
    expiry: asyncio.TimerHandle | None = None


class ParkedTurns:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._parked: dict[str, ParkedTurn] = {}
        self._draining: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, head: str, turn: Turn, events: AsyncIterator[TurnEvent], calls: tuple[ClientToolCall, ...]) -> None:
        parked = ParkedTurn(turn, events, calls)
        parked.expiry = asyncio.get_running_loop().call_later(self._timeout, self._expire, head)
        self._parked[head] = parked

    def take(self, head: str | None) -> ParkedTurn | None:
        parked = self._parked.pop(head, None) if head else None
        if parked is not None and parked.expiry is not None:
            parked.expiry.cancel()
        return parked

    def _expire(self, head: str) -> None:
        parked = self._parked.pop(head, None)
        if parked is not None:
            log.info("tool_results_timeout conversation=%s calls=%d", parked.turn.key, len(parked.calls))
            self._drain(parked, "The client application did not return a result for this tool call in time.")

    def _drain(self, parked: ParkedTurn, why: str) -> None:
        parked.turn.answer_client_calls({c.call_id: (why, True) for c in parked.calls})
        task = asyncio.create_task(self._run_out(parked))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    @staticmethod
    async def _run_out(parked: ParkedTurn) -> None:
        """Let the turn finish with nobody reading, then leave it (its session is recorded as usual)."""
        error: BaseException | None = None
        try:
            async for event in parked.events:
                if isinstance(event, ClientToolsPending):  # more calls: nobody will answer them either
                    parked.turn.answer_client_calls({})
        except BaseException as exc:  # the turn's own failure: logged by the engine when it exits
            error = exc
        finally:
            await parked.turn.__aexit__(type(error) if error else None, error, None)

    async def close(self) -> None:
        for head in list(self._parked):
            parked = self._parked.pop(head)
            if parked.expiry is not None:
                parked.expiry.cancel()
            self._drain(parked, "the daemon is shutting down")
        if self._draining:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._draining, return_exceptions=True)
