"""What a conversation has said, in the form clients resend it: how conversations are recognised.

Clients that keep no session id (OpenClaw, the `openai` SDKs in a loop, agents) resend
the whole history with every request. A face turns that history into a `Transcript`:
the exchanges so far, each the digests of what the client said (user messages, tool
results) and of the reply it got. The engine records the transcript a session holds
after each turn and resumes that session for the next request whose history it holds.

"Holds" is deliberately not "equals", because real clients do not resend exactly what
they sent. The face's digests already ignore whitespace, content-part shapes, the
spelling of tool-call arguments and tool-call ids. On top of that, a client may drop
messages it injected for one request only (OpenClaw appends a context message to every
request and never resends it), so before each reply the resent messages need only be
found, in order, among what the session was told. A client can never add a message the
session did not see, nor change or drop a reply: such a history starts a new session
that carries it, so a session is only ever resumed when it really holds the history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass


def digest(value: object) -> str:
    """A short stable digest of a JSON-serialisable value."""
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its answer: digests of what the client said, and of the reply."""

    said: tuple[str, ...]
    reply: str


@dataclass(frozen=True, slots=True)
class Transcript:
    scope: str  # whose conversation (an API key's scope): transcripts of different scopes never match
    exchanges: tuple[Exchange, ...]

    @property
    def key(self) -> str | None:
        """The index a transcript is looked up by: its scope and replies (which a client never drops)."""
        if not self.exchanges:
            return None
        return digest([self.scope, [exchange.reply for exchange in self.exchanges]])

    def holds(self, history: Transcript) -> bool:
        """Whether a session that went through `self` holds the client's `history` (see the module doc)."""
        if history.scope != self.scope or len(history.exchanges) != len(self.exchanges):
            return False
        return all(
            mine.reply == theirs.reply and _kept(theirs.said, mine.said)
            for mine, theirs in zip(self.exchanges, history.exchanges, strict=True)
        )

    def then(self, said: Sequence[str], reply: str) -> Transcript:
        return Transcript(self.scope, (*self.exchanges, Exchange(tuple(said), reply)))

    def dumps(self) -> str:
        return json.dumps({"scope": self.scope, "exchanges": [[list(e.said), e.reply] for e in self.exchanges]})

    @classmethod
    def loads(cls, text: str) -> Transcript:
        raw = json.loads(text)
        return cls(raw["scope"], tuple(Exchange(tuple(said), reply) for said, reply in raw["exchanges"]))


def _kept(resent: tuple[str, ...], told: tuple[str, ...]) -> bool:
    """`resent` is `told` with some messages left out, in the same order; nothing left out when there was
    nothing to leave out, and never all of it (a reply does not lose everything it answered)."""
    if not resent:
        return not told
    remaining = iter(told)
    return all(any(message == candidate for candidate in remaining) for message in resent)
