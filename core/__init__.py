"""The engine: drives the Claude Code CLI and keeps its sessions. Imports nothing from aiohttp, telegram or a face.

This is its public API: the faces and the host import from `core` only, never from its modules
(`tests/test_layout.py` checks it), so the modules can change behind it.
"""

from core._version import __version__
from core.answer import AnswerDelta
from core.client_tools import ClientTool, ClientToolCall, ClientToolsPending, mcp_names
from core.config import RETRY_AFTER_SECONDS, Settings, SettingsError, load_settings
from core.describe import describe_tool, format_duration
from core.doctor import run_checks
from core.engine import Engine, Prompt, Turn, TurnEvent, TurnRequest
from core.errors import (
    ActivityTimeout,
    CancelReason,
    CLIUnavailable,
    EngineError,
    Saturated,
    SessionNotFound,
    ShuttingDown,
    TurnCancelled,
    TurnFailed,
    UpstreamError,
)
from core.events import Result, ThinkingDelta, ToolStart, Usage
from core.hygiene import AlreadyRunning
from core.images import BadImage, image_block, image_block_from_bytes
from core.models import UnknownModel, answer_model, listed_models, resolve_model
from core.store import Conversation, SessionStore, StoreError
from core.transcript import Exchange, Transcript, digest

__all__ = [
    "RETRY_AFTER_SECONDS",
    "ActivityTimeout",
    "AlreadyRunning",
    "AnswerDelta",
    "BadImage",
    "CLIUnavailable",
    "CancelReason",
    "ClientTool",
    "ClientToolCall",
    "ClientToolsPending",
    "Conversation",
    "Engine",
    "EngineError",
    "Exchange",
    "Prompt",
    "Result",
    "Saturated",
    "SessionNotFound",
    "SessionStore",
    "Settings",
    "SettingsError",
    "ShuttingDown",
    "StoreError",
    "ThinkingDelta",
    "ToolStart",
    "Transcript",
    "Turn",
    "TurnCancelled",
    "TurnEvent",
    "TurnFailed",
    "TurnRequest",
    "UnknownModel",
    "UpstreamError",
    "Usage",
    "__version__",
    "answer_model",
    "describe_tool",
    "digest",
    "format_duration",
    "image_block",
    "image_block_from_bytes",
    "listed_models",
    "load_settings",
    "mcp_names",
    "resolve_model",
    "run_checks",
]
