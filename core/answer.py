"""What the user reads: the main thread's text, once, with blocks kept apart."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.events import AssistantText, Event, TextDelta
from core.turn_events import AnswerDelta


@dataclass
class AnswerBuilder:
    """Turns text events into answer pieces.

    Text normally arrives as deltas and then again as finished blocks; a message's blocks
    are used only when no delta came for that message (the CLI's non-streaming fallback).
    Block indexes differ between the two (the CLI renumbers blocks in `assistant` events),
    so the message id is what ties them together. Separate blocks,
    e.g. narration before a tool call and the answer after it, get a blank line between
    them instead of being glued together. Subagents' text is not part of the answer.
    A quiet builder keeps nothing (a structured turn's answer comes whole at its end).
    """

    quiet: bool = False

    parts: list[str] = field(default_factory=list)
    _streamed: set[str] = field(default_factory=set)
    _last_block: tuple[str, int] | None = None

    def feed(self, event: Event) -> AnswerDelta | None:
        if isinstance(event, TextDelta) and event.parent_tool_use_id is None:
            self._streamed.add(event.message_id)
            return self._emit((event.message_id, event.index), event.text)
        if (
            isinstance(event, AssistantText)
            and event.parent_tool_use_id is None
            and event.message_id not in self._streamed
        ):
            return self._emit((event.message_id, -1 - event.index), event.text)
        return None

    def add(self, text: str) -> AnswerDelta | None:
        """Text that came outside the stream (the result's, when nothing streamed), as its own block."""
        return self._emit(("", -1), text)

    def _emit(self, block: tuple[str, int], text: str) -> AnswerDelta | None:
        if not text or self.quiet:
            return None
        if block != self._last_block and self.parts:
            previous = self.parts[-1]
            if not previous.endswith("\n\n"):
                text = ("\n" if previous.endswith("\n") else "\n\n") + text
        self._last_block = block
        self.parts.append(text)
        return AnswerDelta(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)
