"""`claude-max service install|uninstall`: a systemd user unit (Linux) or a launchd agent (macOS).

Services start with a minimal PATH, where `claude` (and the `node` an npm install of it
may need) is usually missing. The unit therefore names everything by absolute path: the
interpreter running this command, the CLI as found now, and a PATH that contains both.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core import Settings

NAME = "claude-max"
LAUNCHD_LABEL = "com.claude-max.daemon"


class ServiceError(Exception):
    """The service cannot be installed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServicePlan:
    path: Path
    content: bytes
    start: list[list[str]]  # commands that enable and start it
    stop: list[list[str]]  # commands that stop and disable it
    notes: list[str]


def _search_path(claude: Path) -> str:
    dirs = [str(claude.parent), str(Path(sys.executable).parent)]
    node = shutil.which("node")
    if node:
        dirs.append(str(Path(node).parent))
    dirs += ["/usr/local/bin", "/usr/bin", "/bin"]
    if sys.platform == "darwin":
        dirs.insert(-3, "/opt/homebrew/bin")
    return ":".join(dict.fromkeys(dirs))


def _command(env_file: Path) -> list[str]:
    return [sys.executable, "-m", "claude_max.cli", "serve", "--env-file", str(env_file)]


def systemd_plan(settings: Settings, claude: Path, workdir: Path, env_file: Path) -> ServicePlan:
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    stop_timeout = int(settings.shutdown_grace + settings.kill_grace + 10)
    unit = f"""[Unit]
Description=claude-max: your Claude subscription over Telegram and an OpenAI-compatible API
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
WorkingDirectory={workdir}
ExecStart={" ".join(_command(env_file))}
Environment=PATH={_search_path(claude)}
Environment=CLAUDE_BIN={claude}
Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=5
# SIGTERM to the daemon: it drains, then stops every CLI group itself; anything left gets SIGKILL.
KillMode=mixed
TimeoutStopSec={stop_timeout}

[Install]
WantedBy=default.target
"""
    return ServicePlan(
        path=config / "systemd" / "user" / f"{NAME}.service",
        content=unit.encode(),
        start=[["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", NAME]],
        stop=[["systemctl", "--user", "disable", "--now", NAME], ["systemctl", "--user", "daemon-reload"]],
        notes=[
            f"logs: journalctl --user -u {NAME} -f",
            "to keep it running when you are logged out and after reboots: loginctl enable-linger $USER",
        ],
    )


def launchd_plan(settings: Settings, claude: Path, workdir: Path, env_file: Path) -> ServicePlan:
    logs = Path.home() / "Library" / "Logs" / f"{NAME}.log"
    agent = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": _command(env_file),
        "WorkingDirectory": str(workdir),
        "EnvironmentVariables": {"PATH": _search_path(claude), "CLAUDE_BIN": str(claude), "PYTHONUNBUFFERED": "1"},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "ExitTimeOut": int(settings.shutdown_grace + settings.kill_grace + 10),
        "StandardOutPath": str(logs),
        "StandardErrorPath": str(logs),
    }
    path = Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    domain = f"gui/{os.getuid()}"
    return ServicePlan(
        path=path,
        content=plistlib.dumps(agent),
        start=[["launchctl", "bootstrap", domain, str(path)]],
        stop=[["launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"]],
        notes=[f"logs: tail -f {logs}"],
    )


def plan(settings: Settings, *, env_file: Path, platform: str = sys.platform) -> ServicePlan:
    found = shutil.which(settings.claude_bin, path=settings.child_environment().get("PATH"))
    if found is None:
        raise ServiceError(
            f"the Claude Code CLI ({settings.claude_bin!r}) is not on this PATH; install it or set CLAUDE_BIN "
            "to its full path first, so the service can find it"
        )
    claude = Path(found).absolute()  # not resolved: an npm bin symlink survives upgrades
    workdir = env_file.resolve().parent
    env_file = env_file.resolve()
    if platform.startswith("linux"):
        return systemd_plan(settings, claude, workdir, env_file)
    if platform == "darwin":
        return launchd_plan(settings, claude, workdir, env_file)
    raise ServiceError(f"no service manager support for {platform}; run `claude-max serve` under your own")


def _run(commands: list[list[str]]) -> list[str]:
    """Run service-manager commands; returns what could not be run (for the user to run)."""
    pending = []
    for command in commands:
        if shutil.which(command[0]) is None:
            pending.append(" ".join(command))
            continue
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pending.append(f"{' '.join(command)}    # failed: {(done.stderr or done.stdout).strip()[:200]}")
    return pending


def install(service: ServicePlan, *, start: bool = True) -> list[str]:
    service.path.parent.mkdir(parents=True, exist_ok=True)
    service.path.write_bytes(service.content)
    return _run(service.start) if start else [" ".join(c) for c in service.start]


def uninstall(service: ServicePlan, *, stop: bool = True) -> tuple[bool, list[str]]:
    """Stop and disable the service while its file still exists, then remove the file."""
    pending = _run(service.stop[:1]) if stop else [" ".join(service.stop[0])]
    existed = service.path.exists()
    service.path.unlink(missing_ok=True)
    rest = service.stop[1:]
    pending += (_run(rest) if stop else [" ".join(c) for c in rest]) if existed else []
    return existed, pending
