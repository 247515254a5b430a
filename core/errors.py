"""Everything that can go wrong, as seen by the faces and the host: one root, one tree.

    ClaudeMaxError           the root: a face or the host catches it to tell the user
    ├── SettingsError        a setting has a bad value; the message names the variable
    ├── StoreError           the state directory or the session database cannot be used
    ├── AlreadyRunning       another daemon holds this state directory
    ├── UnknownModel         a model name the daemon does not serve (also a ValueError)
    ├── BadImage             an image Claude cannot be given (also a ValueError)
    └── EngineError          a turn went wrong:
        ├── CLIUnavailable       the CLI cannot run at all: missing binary, not logged in,
        │                        refused configuration (e.g. bypass permissions as root)
        ├── Saturated            no CLI slot free within the queue wait
        ├── TurnFailed           the CLI exited without a usable answer (stderr attached)
        │   └── SessionNotFound  `--resume` of a session the CLI does not know
        ├── UpstreamError        the Anthropic API behind the CLI answered with an error
        │   └── LimitReached     a window of the subscription is used up until its reset
        ├── ActivityTimeout      the CLI printed nothing for ACTIVITY_TIMEOUT seconds
        ├── ShuttingDown         the daemon is stopping and takes no new turns
        └── TurnCancelled        the turn was stopped on purpose: its `reason` (a CancelReason) says why

Each EngineError carries the session id (when known) and the tail of the CLI's stderr, so the
faces can show a useful message without knowing how the CLI failed.
"""

from __future__ import annotations

import enum
import math
import time
from datetime import UTC, datetime


class ClaudeMaxError(Exception):
    """The root of every error the daemon tells a user about; `message` is what they read."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingsError(ClaudeMaxError):
    """A setting has a bad value; the message names the variable."""


class StoreError(ClaudeMaxError):
    """The state directory or the database cannot be used."""


class AlreadyRunning(ClaudeMaxError):
    """Another daemon holds this state directory."""


class UnknownModel(ClaudeMaxError, ValueError):
    def __init__(self, requested: str) -> None:
        super().__init__(f"The model `{requested}` does not exist or is not served by this proxy")
        self.requested = requested


class BadImage(ClaudeMaxError, ValueError):
    """An image Claude cannot be given; the message says why."""


class EngineError(ClaudeMaxError):
    def __init__(self, message: str, *, session_id: str | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.session_id = session_id
        self.stderr = stderr


class CLIUnavailable(EngineError):
    pass


class Saturated(EngineError):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TurnFailed(EngineError):
    pass


class SessionNotFound(TurnFailed):
    pass


class NoStructuredAnswer(TurnFailed):
    """The turn asked for an answer matching a JSON Schema, and Claude ended it without giving one."""


class UpstreamError(EngineError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        kind: str | None = None,
        session_id: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, session_id=session_id)
        self.status = status
        self.kind = kind
        self.retry_after = retry_after  # seconds, as the upstream (or the subscription's limit) said


class LimitReached(UpstreamError):
    """A window of the subscription is used up: no turn on this model runs until it resets.

    Raised at once, without running the CLI, while the daemon knows the window is rejected, and for
    a turn the CLI ran when its answer said so."""

    def __init__(self, window: str, resets_at: float, *, session_id: str | None = None) -> None:
        retry_after = max(1, math.ceil(resets_at - time.time()))
        shown = datetime.fromtimestamp(resets_at, UTC).strftime("%H:%M UTC")
        message = f"the subscription's {window.replace('_', '-')} limit is reached; it resets at {shown}"
        super().__init__(message, status=429, kind="usage_limit_reached", session_id=session_id,
                         retry_after=retry_after)  # fmt: skip
        self.window = window
        self.resets_at = resets_at


class ActivityTimeout(EngineError):
    def __init__(
        self, message: str, *, idle_seconds: float, last_activity: str, session_id: str | None = None, stderr: str = ""
    ) -> None:
        super().__init__(message, session_id=session_id, stderr=stderr)
        self.idle_seconds = idle_seconds
        self.last_activity = last_activity


class ShuttingDown(EngineError):
    pass


class CancelReason(enum.Enum):
    """Why a turn was stopped on purpose; the value is what people are told."""

    CLIENT_GONE = "the client went away"
    STOPPED = "stopped by the user"
    SHUTDOWN = "the daemon is shutting down"


class TurnCancelled(EngineError):
    def __init__(self, reason: CancelReason, *, session_id: str | None = None) -> None:
        super().__init__(reason.value, session_id=session_id)
        self.reason = reason
