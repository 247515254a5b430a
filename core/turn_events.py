"""What a face receives from a turn: events about the answer, not about the CLI's stream.

The engine reads the CLI's stream-json (`core.events`) and hands the faces only these.
Everything a face would otherwise have to work out from raw events happens once, in the
turn: only the main thread is shown (subagents' text, thinking and tools are not), tools
come described for people, the result text stands in for an answer that never streamed,
and the finished event says which model answered and whether a limit cut the answer.
A new face (another HTTP dialect, a chat) matches on these types and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.approvals import Decision, PermissionPrompt
from core.events import Usage


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """A piece of the answer as it should be shown (blocks kept apart by a blank line)."""

    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of Claude's visible thinking."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolActivity:
    """Claude started one of its own tools (Bash, Read, a subagent, ...)."""

    name: str
    description: str  # for people: "🔧 Bash: ls -la"


@dataclass(frozen=True, slots=True)
class ClientToolCall:
    """Claude called a client tool: the face returns it to the client as a tool call."""

    call_id: str
    name: str  # the client's name for the tool
    arguments: str  # JSON text


@dataclass(frozen=True, slots=True)
class ClientToolsPending:
    """Every client tool call of Claude's last message is waiting for the client's results.

    The turn holds no CLI slot until `Turn.continue_with` hands it the results."""

    calls: tuple[ClientToolCall, ...]
    usage: Usage  # the turn's tokens since the client was last answered: this response's share


@dataclass(frozen=True, slots=True)
class ApprovalWaiting:
    """The turn waits for a person to approve a tool (shown by the approving face, see `core.approvals`)."""

    prompt: PermissionPrompt
    description: str  # the tool call, described for people


@dataclass(frozen=True, slots=True)
class ApprovalDone:
    prompt: PermissionPrompt
    decision: Decision


@dataclass(frozen=True, slots=True)
class Finished:
    """The turn's last event: it succeeded, and its session is recorded."""

    text: str  # the whole answer
    usage: Usage  # this response's share of the turn's tokens (all of them, unless client tools split it)
    cost_usd: float  # the whole turn's
    model: str  # the model that answered, as the CLI reported it
    truncated: bool  # a limit (output tokens, max turns) cut the answer short
    fallback: str = ""  # "opus → sonnet: five_hour window at 91%" when LIMIT_FALLBACK moved the turn
    refused: tuple[str, ...] = ()  # the tool calls refused in the turn (by a person or the mode), described


TurnEvent = (
    AnswerDelta
    | Reasoning
    | ToolActivity
    | ClientToolCall
    | ClientToolsPending
    | ApprovalWaiting
    | ApprovalDone
    | Finished
)
