"""Nothing of ours outlives us: one daemon per state directory, and the leftovers of a crash reaped.

Every CLI the daemon starts carries two variables in its environment, inherited by all
its children: which state directory it belongs to, and which daemon instance started it.
A daemon that starts finds processes of its state directory but of another instance:
since it holds the state directory's lock, that instance is dead (SIGKILLed, or crashed),
and its process groups are killed. On Linux the CLI itself also dies with the daemon
(`setpriv --pdeathsig`), so only the CLI's own children can be left for the reaper.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from core.errors import AlreadyRunning

log = logging.getLogger("core.hygiene")

STATE_VARIABLE = "CLAUDE_MAX_STATE"
INSTANCE_VARIABLE = "CLAUDE_MAX_INSTANCE"
PROCESS_VARIABLE = "CLAUDE_MAX_PROCESS"  # one CLI process and everything it started, wherever it went


def state_key(state_dir: Path) -> str:
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


class StateLock:
    """An exclusive lock on the state directory, held for the daemon's life (released by the OS on death)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "daemon.lock"
        self._file: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another claude-max (pid {holder}) is running with STATE_DIR {self.path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._file = fd

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
                os.close(self._file)
            self._file = None


def _environ(pid: str) -> dict[bytes, bytes]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def leftover_groups(key: str, instance: str) -> dict[int, list[int]]:
    """Process groups (pgid -> pids) started by another instance for this state directory."""
    groups: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return groups
    state, ours = key.encode(), instance.encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        environ = _environ(entry.name)
        if environ.get(STATE_VARIABLE.encode()) != state or environ.get(INSTANCE_VARIABLE.encode()) == ours:
            continue
        with contextlib.suppress(OSError):
            groups.setdefault(os.getpgid(int(entry.name)), []).append(int(entry.name))
    return groups


def reap_leftovers(key: str, instance: str) -> int:
    """Kill what a dead predecessor left running; returns how many processes there were."""
    groups = leftover_groups(key, instance)
    for pgid, pids in groups.items():
        if pgid == os.getpgid(0):  # never our own group
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    count = sum(len(pids) for pids in groups.values())
    if count:
        log.warning("reaped_leftovers processes=%d groups=%d", count, len(groups))
    return count


def kill_marked(name: str, value: str) -> int:
    """Kill every process whose environment says `name=value`: what a CLI's commands left running in
    sessions of their own (`setsid`, `(cmd &)`), out of reach of a kill of its process group."""
    proc = Path("/proc")
    if not proc.is_dir():
        return 0
    wanted, killed = (name.encode(), value.encode()), 0
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if _environ(entry.name).get(wanted[0]) == wanted[1]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def death_signal_prefix() -> list[str]:
    """On Linux, a wrapper that makes the CLI die with the daemon (even on SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
