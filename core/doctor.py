"""Checks of what the daemon needs, each with the fix when it fails.

`serve` runs the fatal ones before it starts; `claude-max doctor` runs them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass

from core.config import CLI_VERSION_TIMEOUT, Settings
from core.process import child_environment


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    fatal: bool = True  # serve refuses to start when a fatal check fails


async def _run(argv: list[str], within: float) -> tuple[int | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_environment(),
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        await process.wait()
        return None, "", "timed out"
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def check_cli(settings: Settings) -> list[Check]:
    path = shutil.which(settings.claude_bin)
    if path is None:
        return [
            Check(
                "Claude Code CLI",
                False,
                f"{settings.claude_bin!r} was not found on PATH ({os.environ.get('PATH', '')})",
                "install it with `npm install -g @anthropic-ai/claude-code`, or set CLAUDE_BIN to its full path "
                "(services often have a shorter PATH than your shell)",
            )
        ]
    code, out, err = await _run([path, "--version"], CLI_VERSION_TIMEOUT)
    if code != 0:
        return [Check("Claude Code CLI", False, f"{path} --version failed: {(err or out).strip()[:300]}",
                      "reinstall the CLI")]  # fmt: skip
    checks = [Check("Claude Code CLI", True, f"{path} ({out.strip()})")]
    code, out, err = await _run([path, "auth", "status"], CLI_VERSION_TIMEOUT)
    try:
        status = json.loads(out)
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("loggedIn"):
        method = status.get("authMethod", "?")
        checks.append(Check("CLI login", True, f"logged in ({method})"))
    elif isinstance(status, dict):
        checks.append(
            Check("CLI login", False, "the CLI is not logged in",
                  "run `claude auth login`, or `claude setup-token` and put CLAUDE_CODE_OAUTH_TOKEN in .env")
        )  # fmt: skip
    else:
        checks.append(Check("CLI login", False, f"`claude auth status` gave no answer: {(err or out).strip()[:200]}",
                            "run `claude auth status` yourself to see why", fatal=False))  # fmt: skip
    return checks


def check_permissions(settings: Settings) -> Check:
    mode = settings.claude_permission_mode
    if (
        mode == "bypassPermissions"
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
        and not os.environ.get("IS_SANDBOX")
    ):
        return Check(
            "permission mode",
            False,
            "running as root with CLAUDE_PERMISSION_MODE=bypassPermissions: the CLI refuses this",
            "run the daemon as a normal user, or set IS_SANDBOX=1 if this machine is a sandbox",
        )
    return Check("permission mode", True, mode)


def check_state_dir(settings: Settings) -> list[Check]:
    checks = []
    for name, path in (("state directory", settings.state_dir), ("working directory", settings.workdir)):
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
                pass
            checks.append(Check(name, True, str(path)))
        except OSError as exc:
            variable = "STATE_DIR" if name == "state directory" else "CLAUDE_WORKDIR"
            checks.append(
                Check(name, False, f"{path} is not writable: {exc}", f"fix its permissions or set {variable}")
            )
    return checks


def check_port(settings: Settings) -> Check:
    where = f"{settings.proxy_host}:{settings.proxy_port}"
    family = socket.AF_INET6 if ":" in settings.proxy_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.proxy_host, settings.proxy_port))
        except OSError as exc:
            return Check("port", False, f"cannot listen on {where}: {exc.strerror}",
                         f"stop whatever holds it (`ss -ltnp 'sport = :{settings.proxy_port}'` shows who) "
                         "or set PROXY_PORT")  # fmt: skip
    return Check("port", True, f"{where} is free")


def check_exposure(settings: Settings) -> Check:
    if not settings.is_loopback and not settings.proxy_api_keys:
        return Check(
            "exposure",
            False,
            f"PROXY_HOST={settings.proxy_host} accepts connections from other machines, and no PROXY_API_KEYS are set",
            "set PROXY_API_KEYS, or bind to 127.0.0.1",
        )
    detail = "loopback only" if settings.is_loopback else f"{settings.proxy_host}, API keys required"
    return Check("exposure", True, detail)


def check_telegram(settings: Settings) -> Check:
    if settings.telegram_bot_token is None:
        return Check("Telegram", True, "no TELEGRAM_BOT_TOKEN: the bot is off", fatal=False)
    if not settings.telegram_allowed_users:
        return Check("Telegram", False, "the bot is on but TELEGRAM_ALLOWED_USERS is empty: it serves nobody",
                     "send the bot a message to learn your user id, then set TELEGRAM_ALLOWED_USERS",
                     fatal=False)  # fmt: skip
    return Check("Telegram", True, f"{len(settings.telegram_allowed_users)} allowed user(s)", fatal=False)


async def run_checks(settings: Settings, *, include_port: bool = True) -> list[Check]:
    checks = await check_cli(settings)
    checks.append(check_permissions(settings))
    checks += check_state_dir(settings)
    if include_port:
        checks.append(check_port(settings))
    checks.append(check_exposure(settings))
    checks.append(check_telegram(settings))
    return checks
