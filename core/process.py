"""One Claude Code CLI process: spawned in its own process group, watched, killed as a group.

This is the one place where OS and subprocess failures become `EngineError`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.client_tools import ToolSession
from core.errors import ActivityTimeout, CLIUnavailable
from core.hygiene import PROCESS_VARIABLE, kill_marked

log = logging.getLogger("core.process")

_READ_CHUNK = 1 << 16
_STDERR_KEEP = 16 * 1024


@dataclass(frozen=True)
class Spawn:
    argv: list[str]
    cwd: Path
    env: dict[str, str]


@contextlib.contextmanager
def map_spawn_errors(binary: str, cwd: Path) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as exc:
        if not cwd.is_dir():
            raise CLIUnavailable(f"the working directory {cwd} does not exist") from exc
        raise CLIUnavailable(
            f"the Claude Code CLI was not found ({binary!r}); install it with "
            "`npm install -g @anthropic-ai/claude-code` or set CLAUDE_BIN"
        ) from exc
    except PermissionError as exc:
        raise CLIUnavailable(f"the Claude Code CLI ({binary!r}) is not executable: {exc}") from exc
    except OSError as exc:
        raise CLIUnavailable(f"could not start the Claude Code CLI ({binary!r}): {exc}") from exc


def group_has_live_members(pgid: int) -> bool:
    """Whether a process group still has a member that is not a zombie.

    Zombies cannot be killed and are reaped by whoever adopted them, so they do not count.
    Without /proc (macOS), any member counts.
    """
    try:
        os.killpg(pgid, 0)  # the common case, cheaply: no member at all
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


class CLIProcess:
    """A running CLI in stream-json input mode: one process can serve many turns.

    A reader task moves stdout lines into a queue, so a turn's consumer can go away (a
    client disconnects) without losing the process: the rest of the turn can still be
    read, after an interrupt, and the process kept warm for the next turn.
    """

    def __init__(self, spawn: Spawn, *, activity_timeout: float, kill_grace: float) -> None:
        self._spawn = spawn
        self._activity_timeout = activity_timeout
        self._kill_grace = kill_grace
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._readers: list[asyncio.Task[None]] = []
        self._lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._eof = False
        self._last_activity = time.monotonic()
        self.last_activity_note = "started"
        self.tool_session: ToolSession | None = None  # the client tools this process was started with
        self.on_stop: Callable[[], None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def cwd(self) -> Path:
        return self._spawn.cwd

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def alive(self) -> bool:
        """Running, with its stdout still open."""
        return self._proc is not None and self._proc.returncode is None and not self._eof

    @property
    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace").strip()

    def note(self, what: str) -> None:
        """Remember what the CLI did last, for timeout messages."""
        self.last_activity_note = what

    def touch(self) -> None:
        """Start the activity clock afresh (a new turn begins; silence before it does not count)."""
        self._last_activity = time.monotonic()

    async def start(self) -> None:
        spawn = self._spawn
        with map_spawn_errors(spawn.argv[0], spawn.cwd):
            self._proc = await asyncio.create_subprocess_exec(
                *spawn.argv,
                cwd=spawn.cwd,
                env=spawn.env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        self._last_activity = time.monotonic()
        self._readers = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]
        log.debug("cli started pid=%s argv=%s", self._proc.pid, " ".join(spawn.argv[1:]))

    async def send(self, message: dict[str, Any]) -> bool:
        """Write one stream-json line; False if the CLI no longer reads its input."""
        if self._proc is None or self._proc.stdin is None or self._proc.stdin.is_closing():
            return False
        try:
            self._proc.stdin.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")
            await self._proc.stdin.drain()
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    async def interrupt(self) -> bool:
        """Ask the CLI to abort the running turn (it answers with a result and stays usable)."""
        request = {"type": "control_request", "request_id": f"interrupt-{time.monotonic_ns()}",
                   "request": {"subtype": "interrupt"}}  # fmt: skip
        return await self.send(request)

    def close_stdin(self) -> None:
        if self._proc is not None and self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout, lines = self._proc.stdout, self._lines
        pending = bytearray()
        try:
            while chunk := await stdout.read(_READ_CHUNK):
                self._last_activity = time.monotonic()
                start = 0
                while (end := chunk.find(b"\n", start)) != -1:
                    if pending:
                        pending += chunk[start:end]
                        line = bytes(pending)
                        pending.clear()
                    else:
                        line = chunk[start:end]
                    if line.strip():
                        lines.put_nowait(line)
                    start = end + 1
                pending += chunk[start:]
            if pending.strip():
                lines.put_nowait(bytes(pending))
        finally:
            self._eof = True
            lines.put_nowait(None)

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while chunk := await self._proc.stderr.read(_READ_CHUNK):
            self._last_activity = time.monotonic()
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > _STDERR_KEEP and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    def _idle(self) -> float:
        return time.monotonic() - self._last_activity

    async def next_line(self, *, watch: bool = True) -> bytes | None:
        """The next stdout line, None at the end. With `watch`, raises `ActivityTimeout` after
        ACTIVITY_TIMEOUT seconds in which the CLI printed nothing (stdout or stderr)."""
        lines = self._lines
        if not lines.empty():
            return lines.get_nowait()  # the hot path: no timer when a line is waiting
        if not watch:
            return await lines.get()
        while True:
            try:
                async with asyncio.timeout(max(self._activity_timeout - self._idle(), 0.0)):
                    return await lines.get()
            except TimeoutError:
                idle = self._idle()
                if idle < self._activity_timeout:
                    continue  # stderr spoke meanwhile
                raise ActivityTimeout(
                    f"the Claude Code CLI printed nothing for {idle:.0f} s "
                    f"(last: {self.last_activity_note}); stopped it",
                    idle_seconds=idle,
                    last_activity=self.last_activity_note,
                    stderr=self.stderr_tail,
                ) from None

    async def wait_exit(self, within: float) -> int | None:
        """Wait for the CLI to exit on its own; None if it did not within `within` seconds."""
        assert self._proc is not None
        try:
            async with asyncio.timeout(within):
                code = await self._proc.wait()
                await asyncio.gather(*(asyncio.shield(r) for r in self._readers), return_exceptions=True)
            return code
        except TimeoutError:
            return None

    def _signal_group(self, sig: signal.Signals) -> bool:
        """Send `sig` to the CLI's process group; False when the group is gone."""
        if self._proc is None:
            return False
        try:
            os.killpg(self._proc.pid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - the pgid was reused by someone else
            return False

    def _group_alive(self) -> bool:
        if self._proc is None:
            return False
        return group_has_live_members(self._proc.pid)

    async def stop(self) -> None:
        """End the CLI and everything it started: TERM to the group, KILL after the grace period.

        Also used after a normal exit, to sweep up children the CLI left behind (background
        commands of its Bash tool).
        """
        if self.on_stop is not None:
            on_stop, self.on_stop = self.on_stop, None
            on_stop()
        if self._proc is None:
            return
        self.close_stdin()
        if self._proc.returncode is None or self._group_alive():
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + self._kill_grace
            while time.monotonic() < deadline:
                if self._proc.returncode is not None and not self._group_alive():
                    break
                await asyncio.sleep(0.05)
            if self._signal_group(signal.SIGKILL):
                log.debug("cli group %s killed after %.1f s grace", self._proc.pid, self._kill_grace)
        with contextlib.suppress(ProcessLookupError):
            await self._proc.wait()
        mark = self._spawn.env.get(PROCESS_VARIABLE)
        if mark and (escaped := await asyncio.to_thread(kill_marked, PROCESS_VARIABLE, mark)):
            log.info("cli_leftovers_killed pid=%s processes=%d", self._proc.pid, escaped)
        for reader in self._readers:
            if not reader.done():
                reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
