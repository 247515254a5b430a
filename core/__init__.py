"""The engine: drives the Claude Code CLI and keeps its sessions. Imports nothing from aiohttp, telegram or a face.

This is its public API: the faces and the host import from `core` only, never from its modules
(`tests/test_layout.py` checks it), so the modules can change behind it.
"""

from core._version import __version__
from core.approvals import NO_APPROVER, PLAN_TOOL, QUESTION_TOOL, Approvals, Decision, PermissionPrompt
from core.cli_sessions import SessionSummary
from core.client_tools import ClientTool, mcp_names
from core.config import ASK, RETRY_AFTER_SECONDS, Settings, load_settings
from core.describe import format_duration
from core.doctor import run_checks
from core.engine import Engine
from core.errors import (
    ActivityTimeout,
    AlreadyRunning,
    BadImage,
    CancelReason,
    ClaudeMaxError,
    CLIUnavailable,
    EngineError,
    LimitReached,
    NoStructuredAnswer,
    Saturated,
    SessionNotFound,
    SettingsError,
    ShuttingDown,
    StoreError,
    TurnCancelled,
    TurnFailed,
    UnknownModel,
    UpstreamError,
)
from core.events import LimitWindow, Usage
from core.images import image_block, image_block_from_bytes
from core.limits import FallbackRule, LimitCrossing, SubscriptionLimits, WindowState
from core.models import family, listed_models, resolve_model
from core.projects import ProjectError, Projects
from core.store import Conversation, SessionStore, StoredResponse, UsageRow
from core.transcript import Exchange, Transcript, digest
from core.turn import Prompt, Turn, TurnRequest
from core.turn_events import (
    AnswerDelta,
    ApprovalDone,
    ApprovalWaiting,
    ClientToolCall,
    ClientToolsPending,
    Finished,
    Reasoning,
    ToolActivity,
    TurnEvent,
)

__all__ = [
    "ASK",
    "NO_APPROVER",
    "PLAN_TOOL",
    "QUESTION_TOOL",
    "RETRY_AFTER_SECONDS",
    "ActivityTimeout",
    "AlreadyRunning",
    "AnswerDelta",
    "ApprovalDone",
    "ApprovalWaiting",
    "Approvals",
    "BadImage",
    "CLIUnavailable",
    "CancelReason",
    "ClaudeMaxError",
    "ClientTool",
    "ClientToolCall",
    "ClientToolsPending",
    "Conversation",
    "Decision",
    "Engine",
    "EngineError",
    "Exchange",
    "FallbackRule",
    "Finished",
    "LimitCrossing",
    "LimitReached",
    "LimitWindow",
    "NoStructuredAnswer",
    "PermissionPrompt",
    "ProjectError",
    "Projects",
    "Prompt",
    "Reasoning",
    "Saturated",
    "SessionNotFound",
    "SessionStore",
    "SessionSummary",
    "Settings",
    "SettingsError",
    "ShuttingDown",
    "StoreError",
    "StoredResponse",
    "SubscriptionLimits",
    "ToolActivity",
    "Transcript",
    "Turn",
    "TurnCancelled",
    "TurnEvent",
    "TurnFailed",
    "TurnRequest",
    "UnknownModel",
    "UpstreamError",
    "Usage",
    "UsageRow",
    "WindowState",
    "__version__",
    "digest",
    "family",
    "format_duration",
    "image_block",
    "image_block_from_bytes",
    "listed_models",
    "load_settings",
    "mcp_names",
    "resolve_model",
    "run_checks",
]
