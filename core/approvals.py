"""Permission prompts: the CLI asks before a tool runs, and a person answers.

In `ask` mode the CLI runs with `--permission-prompt-tool stdio`: before a tool that needs
approval it prints a `can_use_tool` control request and waits for the answer on stdin.
The turn hands the request to the engine's `Approvals`, which gives it to whichever face
registered as the approver (the Telegram bot: in the chat for its own turns, in the
notify chat for HTTP turns) and waits for a `Decision`, at most APPROVAL_TIMEOUT seconds.
With no approver, a prompt is denied at once with a message that says how to enable them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from core.describe import format_duration

log = logging.getLogger("core.approvals")

NO_APPROVER = (
    "Nobody can approve this here: the daemon has no Telegram bot with a chat to ask "
    "(set TELEGRAM_BOT_TOKEN and TELEGRAM_NOTIFY_ID, or choose another permission mode)."
)


@dataclass(frozen=True)
class PermissionPrompt:
    """Claude Code wants to use a tool and asks first."""

    id: str  # short, unique while the daemon runs: it goes into Telegram's callback data
    key: str  # the conversation
    face: str  # the face the turn came from ("telegram", "http")
    tool: str
    input: dict[str, Any]
    description: str  # the CLI's own words for what the call does, if any
    suggestions: tuple[dict[str, Any], ...] = ()  # the rules "always allow" would add (the CLI's)
    asked_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Decision:
    allow: bool
    by: str  # who decided: a person's name, "timeout", "no approver", "stop"
    message: str = ""  # for a denial: what Claude is told
    always: bool = False  # allow, and add the CLI's suggested rules for this project
    updated_input: dict[str, Any] | None = None  # the tool's input as approved (an answered question)

    @property
    def verdict(self) -> str:
        """allow, always or deny: for logs and metrics."""
        return "always" if self.always and self.allow else "allow" if self.allow else "deny"


def permission_answer(request_id: str, prompt: PermissionPrompt, decision: Decision) -> dict[str, Any]:
    """The `control_response` that gives the CLI a person's decision."""
    answer: dict[str, Any]
    if decision.allow:
        answer = {"behavior": "allow", "updatedInput": decision.updated_input or prompt.input}
        if decision.always and prompt.suggestions:
            answer["updatedPermissions"] = list(prompt.suggestions)  # the CLI stops asking for these rules
    else:
        answer = {"behavior": "deny", "message": decision.message or f"Denied by {decision.by}."}
    return {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": answer},
    }


QUESTION_TOOL = "AskUserQuestion"  # the CLI's tool for asking the user; its answers go back in the input
PLAN_TOOL = "ExitPlanMode"  # Claude's plan, for approval before it leaves plan mode
# The tools through which Claude asks the user something: a "no" to them (a skipped question, "keep
# planning") is an answer, not a refused tool.
ASKS_THE_USER = frozenset({QUESTION_TOOL, PLAN_TOOL})


def changes_mode(prompt: PermissionPrompt, decision: Decision) -> bool:
    """Whether the CLI leaves the permission mode it was started in once it has this answer: an approved
    plan ends plan mode; an "always" that applies a `setMode` suggestion switches modes."""
    if not decision.allow:
        return False
    if prompt.tool == PLAN_TOOL:
        return True
    return decision.always and any(s.get("type") == "setMode" for s in prompt.suggestions)


def control_error(request_id: str, error: str) -> dict[str, Any]:
    return {"type": "control_response", "response": {"subtype": "error", "request_id": request_id, "error": error}}


Approver = Callable[[PermissionPrompt], Awaitable[None]]
Resolved = Callable[[PermissionPrompt, Decision], Awaitable[None]]


class Approvals:
    """The prompts waiting for a person, and who shows them."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._approver: Approver | None = None
        self._resolved: Resolved | None = None
        self._pending: dict[str, tuple[PermissionPrompt, asyncio.Future[Decision]]] = {}
        self._watchers: list[Callable[[PermissionPrompt, Decision], None]] = []
        # Prompt ids carry this daemon's own prefix: a button pressed on a prompt of an earlier run (the
        # message outlives a restart) can never answer a prompt of this one.
        self._prefix = secrets.token_hex(3)
        self._ids = itertools.count(1)

    def register(self, approver: Approver, resolved: Resolved) -> None:
        """A face that can ask a person: `approver(prompt)` shows a prompt, `resolved(prompt, decision)` is
        told how each one ended (also when nobody pressed a button: a timeout, a stop)."""
        self._approver, self._resolved = approver, resolved

    def on_decided(self, watcher: Callable[[PermissionPrompt, Decision], None]) -> None:
        """Call `watcher(prompt, decision)` for every prompt once it is decided (metrics)."""
        self._watchers.append(watcher)

    @property
    def available(self) -> bool:
        return self._approver is not None

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def pending(self, prompt_id: str) -> PermissionPrompt | None:
        entry = self._pending.get(prompt_id)
        return entry[0] if entry else None

    def decide(self, prompt_id: str, decision: Decision) -> bool:
        """Answer a pending prompt; False when it is not pending (answered, timed out, its turn stopped)."""
        entry = self._pending.get(prompt_id)
        if entry is None or entry[1].done():
            return False
        entry[1].set_result(decision)
        return True

    def deny_all(self, key: str, by: str, message: str) -> None:
        """Deny what a conversation's turn is waiting for (it is being stopped)."""
        for prompt_id, (prompt, _) in list(self._pending.items()):
            if prompt.key == key:
                self.decide(prompt_id, Decision(False, by, message))

    async def ask(self, prompt: PermissionPrompt) -> Decision:
        """Show the prompt and wait for a person, at most `timeout` seconds (then it is a denial)."""
        if self._approver is None:
            decision = Decision(False, "no approver", NO_APPROVER)
            self._log(prompt, decision)
            return decision
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending[prompt.id] = (prompt, future)
        try:
            try:
                await self._approver(prompt)
            except Exception:
                log.exception("approval_prompt_failed prompt=%s", prompt.id)
                if not future.done():
                    future.set_result(Decision(False, "error", "The approval prompt could not be shown."))
            try:
                async with asyncio.timeout(self.timeout):
                    decision = await asyncio.shield(future)
            except TimeoutError:
                waited = f"{self.timeout:g} seconds" if self.timeout < 60 else format_duration(self.timeout)
                decision = Decision(False, "timeout", f"Nobody approved this within {waited}.")
        finally:
            self._pending.pop(prompt.id, None)
        self._log(prompt, decision)
        if self._resolved is not None:
            try:
                await self._resolved(prompt, decision)
            except Exception:
                log.exception("approval_resolve_failed prompt=%s", prompt.id)
        return decision

    def _log(self, prompt: PermissionPrompt, decision: Decision) -> None:
        """One line per decision: what was asked (the tool, never its input: it may hold secrets), who decided."""
        log.info(
            "permission conversation=%s face=%s tool=%s decision=%s by=%s waited_ms=%d",
            prompt.key, prompt.face, prompt.tool, decision.verdict, decision.by,
            (time.monotonic() - prompt.asked_at) * 1000,
        )  # fmt: skip
        for watcher in self._watchers:
            watcher(prompt, decision)
