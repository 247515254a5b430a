"""Turns waiting for the client's tool results, between one HTTP request and the next.

When Claude calls the client's tools, the answer to the first request ends with
`tool_calls`; the CLI meanwhile waits in the middle of its turn. The turn is parked here
with the transcript of the history the client will send back (the assistant message with
those calls included), and the next request whose history that transcript holds, and
which brings the results, takes it and goes on reading the same turn.

A parked turn holds a CLI process but no slot of MAX_CONCURRENT. It is released (its
calls get error results, it runs to its end unread, and its session is recorded as the
client saw it) when nobody comes back within TOOL_RESULT_TIMEOUT, when more than
TOOL_PARKED_MAX turns wait, or at once when a request shows that its client moved on:
a request in the same conversation that does not carry the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from core import ClientToolCall, ClientToolsPending, Transcript, Turn, TurnEvent

log = logging.getLogger("proxy.parked")

# How long a request that moved on waits for the turn it supersedes to finish (so it finds the session).
_SUPERSEDED_WAIT = 30.0


@dataclass(eq=False)
class ParkedTurn:
    turn: Turn
    events: AsyncIterator[TurnEvent]
    calls: tuple[ClientToolCall, ...]
    transcript: Transcript  # the history the client will send back with the results
    stack: AsyncExitStack  # holds the turn: leaving it leaves the turn
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)

    def moved_on(self, history: Transcript, said: Sequence[str], key: str | None) -> bool:
        """Whether a request that did not take this turn is its client going on without the results:
        the same explicit conversation, or a history that agrees with this one up to where it stops and
        then says what this turn was asked (a retry), or carries the calls but not their results."""
        if key is not None:
            return key == self.turn.key
        exchanges = self.transcript.exchanges
        reached = len(history.exchanges)
        if reached > len(exchanges) or not Transcript(self.transcript.scope, exchanges[:reached]).holds(history):
            return False
        if reached == len(exchanges):
            return True
        asked = exchanges[reached].said
        return bool(said and asked and said[0] == asked[0])


class ParkedTurns:
    def __init__(self, timeout: float, capacity: int) -> None:
        self._timeout = timeout
        self._capacity = capacity
        self._parked: list[ParkedTurn] = []  # oldest first
        self._draining: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, parked: ParkedTurn) -> None:
        parked.expiry = asyncio.get_running_loop().call_later(self._timeout, self._expire, parked)
        self._parked.append(parked)
        while len(self._parked) > self._capacity:
            oldest = self._unpark(self._parked[0])
            log.info("tool_results_evicted conversation=%s calls=%d", oldest.turn.key, len(oldest.calls))
            self._drain(oldest, "Too many turns were waiting for the client application's tool results.")

    def take(self, history: Transcript | None) -> ParkedTurn | None:
        """The parked turn whose client sent back `history`, no longer parked."""
        found = next((p for p in self._parked if history is not None and p.transcript.holds(history)), None)
        return self._unpark(found) if found is not None else None

    async def release_moved_on(self, history: Transcript, said: Sequence[str], key: str | None) -> None:
        """Release the turns this request shows its client has left, and wait until they have finished, so
        that the request finds their sessions."""
        gone = [p for p in self._parked if p.moved_on(history, said, key)]
        tasks = []
        for parked in gone:
            self._unpark(parked)
            log.info("tool_results_abandoned conversation=%s calls=%d", parked.turn.key, len(parked.calls))
            tasks.append(self._drain(parked, "The client application went on without the result of this tool call."))
        if tasks:
            await asyncio.wait([asyncio.shield(t) for t in tasks], timeout=_SUPERSEDED_WAIT)

    def _unpark(self, parked: ParkedTurn) -> ParkedTurn:
        self._parked.remove(parked)
        if parked.expiry is not None:
            parked.expiry.cancel()
        return parked

    def _expire(self, parked: ParkedTurn) -> None:
        if parked in self._parked:
            self._unpark(parked)
            log.info("tool_results_timeout conversation=%s calls=%d", parked.turn.key, len(parked.calls))
            self._drain(parked, "The client application did not return a result for this tool call in time.")

    def _drain(self, parked: ParkedTurn, why: str) -> asyncio.Task[None]:
        parked.turn.answer_client_calls({c.call_id: (why, True) for c in parked.calls})
        task = asyncio.create_task(self._run_out(parked))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        return task

    @staticmethod
    async def _run_out(parked: ParkedTurn) -> None:
        """Let the turn finish with nobody reading, then leave it (its session is recorded as usual)."""
        with contextlib.suppress(Exception):  # the turn's own failure: logged by the engine when it leaves
            async with parked.stack:
                async for event in parked.events:
                    if isinstance(event, ClientToolsPending):  # more calls: nobody will answer them either
                        parked.turn.answer_client_calls({})

    async def close(self) -> None:
        for parked in list(self._parked):
            self._drain(self._unpark(parked), "the daemon is shutting down")
        if self._draining:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._draining, return_exceptions=True)
