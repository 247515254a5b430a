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
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from core.config import CLI_VERSION_TIMEOUT, Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    fatal: bool = True  # serve refuses to start when a fatal check fails


async def _run(argv: list[str], within: float, env: dict[str, str]) -> tuple[int | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
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
    path = shutil.which(settings.claude_bin, path=settings.child_environment().get("PATH"))
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
    env = settings.child_environment()
    code, out, err = await _run([path, "--version"], CLI_VERSION_TIMEOUT, env)
    if code != 0:
        return [Check("Claude Code CLI", False, f"{path} --version failed: {(err or out).strip()[:300]}",
                      "reinstall the CLI")]  # fmt: skip
    checks = [Check("Claude Code CLI", True, f"{path} ({out.strip()})")]
    code, out, err = await _run([path, "auth", "status"], CLI_VERSION_TIMEOUT, env)
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


def _face_modes(settings: Settings) -> dict[str, str]:
    """The permission mode of each face that runs, by the variable that sets it."""
    modes: dict[str, str] = {"PROXY_PERMISSION_MODE": settings.proxy_permission_mode}
    if settings.telegram_bot_token is not None:
        modes["TELEGRAM_PERMISSION_MODE"] = settings.telegram_permission_mode
    return modes


def check_permissions(settings: Settings) -> Check:
    modes = _face_modes(settings)
    # What the CLI will see (the environment, and .env values it does not have); the CLI accepts only "1".
    sandbox = settings.child_environment().get("IS_SANDBOX")
    bypassing = [name for name, mode in modes.items() if mode == "bypassPermissions"]
    if bypassing and hasattr(os, "geteuid") and os.geteuid() == 0 and sandbox != "1":
        shown = "" if sandbox is None else f" (IS_SANDBOX={sandbox!r} is not 1)"
        return Check(
            "permission mode",
            False,
            f"running as root with {bypassing[0]}=bypassPermissions: the CLI refuses this{shown}",
            "run the daemon as a normal user, or set IS_SANDBOX=1 (exactly 1) if this machine is a sandbox",
        )
    return Check("permission mode", True, ", ".join(f"{name}={mode}" for name, mode in modes.items()))


def check_approvals(settings: Settings) -> Check:
    """HTTP turns that ask need a person in Telegram's notify chat; without one they are denied at once."""
    mode = settings.proxy_permission_mode
    if mode in ("bypassPermissions", "dontAsk"):
        return Check("approvals", True, f"HTTP turns ask nobody (PROXY_PERMISSION_MODE={mode})")
    if settings.telegram_bot_token is None or settings.telegram_notify_id is None:
        return Check(
            "approvals", False,
            f"PROXY_PERMISSION_MODE={mode}, but no Telegram chat to ask: HTTP turns' permission prompts are denied",
            "set TELEGRAM_BOT_TOKEN and TELEGRAM_NOTIFY_ID (the chat that approves), or PROXY_PERMISSION_MODE",
            fatal=False,
        )  # fmt: skip
    return Check("approvals", True, f"HTTP turns are approved in chat {settings.telegram_notify_id}")


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


def port_holder(port: int) -> str | None:
    """Which process listens on `port` (Linux, own processes only): "pid 123: claude-max serve"."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    if not inodes:
        return None
    with contextlib.suppress(OSError):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
                        return f"pid {pid}: {command}"
    return None


def _our_daemon_answers(host: str, port: int) -> bool:
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok" and "max_concurrent" in body


def check_port(settings: Settings) -> Check:
    where = f"{settings.proxy_host}:{settings.proxy_port}"
    family = socket.AF_INET6 if ":" in settings.proxy_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.proxy_host, settings.proxy_port))
        except OSError as exc:
            holder = port_holder(settings.proxy_port)
            if _our_daemon_answers(settings.proxy_host, settings.proxy_port):
                return Check("port", True, f"{where} is served by a running claude-max ({holder or 'pid unknown'})")
            detail = f"cannot listen on {where}: {exc.strerror}; held by {holder or 'an unknown process'}"
            return Check("port", False, detail, "stop whatever holds it, or set PROXY_PORT")
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


def check_env_file(settings: Settings) -> Check:
    """A `.env` holding secrets should be readable by its owner only."""
    found = settings.env_file_secrets
    if found is None:
        return Check("env file", True, "no secrets in a .env file", fatal=False)
    path, names = found
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        return Check("env file", False, f"{path}: {exc.strerror}", fatal=False)
    if mode & 0o077:
        return Check(
            "env file", False, f"{path} holds {', '.join(names)} and is readable by others (mode {mode:o})",
            f"chmod 600 {path}", fatal=False,
        )  # fmt: skip
    return Check("env file", True, f"{path} holds {', '.join(names)}, readable by its owner only", fatal=False)


def _bot_api(settings: Settings, method: str, query: str = "") -> tuple[int, dict[str, Any]]:
    """Call the Bot API; (HTTP status, body). The URL holds the token: it never reaches a message."""
    assert settings.telegram_bot_token is not None
    root = settings.telegram_api_url.rstrip("/")
    url = f"{root}/bot{settings.telegram_bot_token.get_secret_value()}/{method}{query}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {}


def check_telegram(settings: Settings, *, daemon_running: bool = False) -> list[Check]:
    if settings.telegram_bot_token is None:
        return [Check("Telegram", True, "no TELEGRAM_BOT_TOKEN: the bot is off", fatal=False)]
    try:
        status, body = _bot_api(settings, "getMe")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return [Check("Telegram", False, f"cannot reach {settings.telegram_api_url}: {reason}",
                      "check the network, or TELEGRAM_API_URL", fatal=False)]  # fmt: skip
    if status in (401, 404):
        return [Check("Telegram token", False, "Telegram rejects TELEGRAM_BOT_TOKEN",
                      "copy the token again from @BotFather (/mybots, API Token)")]  # fmt: skip
    if status != 200 or not body.get("ok"):
        return [Check("Telegram token", False, f"getMe failed: {body.get('description', status)}", fatal=False)]
    checks = [Check("Telegram token", True, f"valid, the bot is @{body['result'].get('username')}")]
    if daemon_running:
        checks.append(Check("Telegram polling", True, "this daemon is polling", fatal=False))
    else:
        # No offset: nothing pending is confirmed (or lost) by looking.
        status, body = _bot_api(settings, "getUpdates", "?timeout=0&limit=1")
        if status == 409:
            checks.append(Check("Telegram polling", False, f"taken: {body.get('description', 'conflict')}",
                                "stop the other bot instance using this token (or delete its webhook)"))  # fmt: skip
        else:
            checks.append(Check("Telegram polling", True, "free"))
    if not settings.telegram_allowed_users:
        checks.append(Check("Telegram allowlist", False, "TELEGRAM_ALLOWED_USERS is empty: the bot serves nobody",
                            "message the bot to learn your user id, then set TELEGRAM_ALLOWED_USERS",
                            fatal=False))  # fmt: skip
    else:
        checks.append(Check("Telegram allowlist", True, f"{len(settings.telegram_allowed_users)} user(s)"))
    return checks


async def run_checks(settings: Settings) -> list[Check]:
    checks = await check_cli(settings)
    checks.append(check_permissions(settings))
    checks.append(check_approvals(settings))
    checks += check_state_dir(settings)
    port = check_port(settings)
    checks.append(port)
    checks.append(check_exposure(settings))
    checks.append(check_env_file(settings))
    daemon_running = port.ok and "served by a running claude-max" in port.detail
    checks += await asyncio.to_thread(check_telegram, settings, daemon_running=daemon_running)
    return checks
