"""Shared fixtures: the real Claude Code CLI against a mock Anthropic API, and the daemon in-process.

Nothing here reaches the network: the CLI's only API calls go to the mock on 127.0.0.1,
and all of its files live in the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import openai
import pytest
from aiohttp import web

from claude_max.daemon import BOT, compose
from core.config import Settings
from core.engine import Engine
from proxy.keys import ENGINE
from proxy.listener import GuardedSite, app_runner
from tests.fake_telegram import TOKEN, FakeTelegram
from tests.mock_anthropic import MockAnthropic

ROOT = Path(__file__).resolve().parent.parent
PINNED_CLI_VERSION = "2.1.331"
DEFAULT_TEST_CLI = ROOT / f".cache/claude-code-{PINNED_CLI_VERSION}/node_modules/.bin/claude"
MARK_VARIABLE = "CLAUDE_MAX_TEST_MARK"


@pytest.fixture(scope="session")
def claude_cli() -> Path:
    """The pinned real CLI, installed by `make test`. Missing it is an error, never a skip."""
    path = Path(os.environ.get("CLAUDE_MAX_TEST_CLI") or DEFAULT_TEST_CLI)
    if not path.exists():
        pytest.fail(f"the Claude Code CLI is not installed at {path}; run the tests with `make test`", pytrace=False)
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    assert PINNED_CLI_VERSION in version, f"expected Claude Code {PINNED_CLI_VERSION}, got {version!r}"
    return path


@pytest.fixture
async def mock_api() -> AsyncIterator[MockAnthropic]:
    mock = MockAnthropic()
    await mock.start()
    yield mock
    await mock.stop()


def processes_marked(mark: str) -> list[int]:
    """Pids of live processes whose environment carries `mark` (the CLI and anything it started)."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
                if state != b"Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def process_group(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[2])


def running_commands(mark: str, needle: bytes) -> list[int]:
    """Processes of this test whose command line contains `needle` (e.g. a tool's command)."""
    return [pid for pid in processes_marked(mark) if needle in b" ".join(cmdline(pid))]


async def wait_no_processes(mark: str, within: float = 10.0) -> list[int]:
    deadline = asyncio.get_running_loop().time() + within
    while (alive := processes_marked(mark)) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    return alive


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mock_api: MockAnthropic) -> str:
    """The environment the CLI inherits from the daemon; returns the mark that tags its processes."""
    mark = uuid.uuid4().hex
    home = tmp_path / "home"
    home.mkdir()
    for name, value in {
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": mock_api.base_url,
        "ANTHROPIC_API_KEY": "sk-test-not-a-real-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "IS_SANDBOX": "1",
        "DISABLE_AUTOUPDATER": "1",
        MARK_VARIABLE: mark,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("CLAUDECODE", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return mark


@pytest.fixture
def make_settings(tmp_path: Path, claude_cli: Path) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "claude_bin": str(claude_cli),
            "state_dir": tmp_path / "state",
            "proxy_port": 0,
            "activity_timeout": 60,
            "kill_grace": 2,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[arg-type]

    return build


@dataclass
class Daemon:
    url: str
    app: web.Application
    settings: Settings
    mark: str
    runner: web.AppRunner
    clients: list[openai.AsyncOpenAI | anthropic.AsyncAnthropic] = field(default_factory=list)

    @property
    def engine(self) -> Engine:
        return self.app[ENGINE]

    def strays(self) -> list[int]:
        """Processes of this test that are neither a warm CLI the engine keeps nor one of its children."""
        kept = self.engine.pool.pids()
        return [pid for pid in processes_marked(self.mark) if process_group(pid) not in kept]

    async def wait_no_strays(self, within: float = 10.0) -> list[int]:
        deadline = asyncio.get_running_loop().time() + within
        while (strays := self.strays()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        return strays

    def client(self, api_key: str = "sk-anything", **kwargs: object) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    def anthropic(self, api_key: str | None = "sk-anything", **kwargs: object) -> anthropic.AsyncAnthropic:
        """The official Anthropic SDK, pointed at the daemon (its own base URL: the SDK adds /v1/messages)."""
        client = anthropic.AsyncAnthropic(base_url=self.url, api_key=api_key, max_retries=0, **kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client


@pytest.fixture
async def start_daemon(cli_env: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., object]]:
    """Start the daemon's HTTP app on a free loopback port; on teardown, check nothing was left running."""
    runners: list[web.AppRunner] = []
    daemons: list[Daemon] = []

    async def start(**overrides: object) -> Daemon:
        settings = make_settings(**overrides)
        app = compose(settings)  # the daemon exactly as `claude-max serve` builds it
        runner = app_runner(app)
        await runner.setup()
        site = GuardedSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        daemon = Daemon(f"http://127.0.0.1:{site.port}", app, settings, cli_env, runner)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        for client in daemon.clients:
            await client.close()
    for runner in runners:
        await runner.cleanup()
    leftover = await wait_no_processes(cli_env)
    assert not leftover, f"processes left running after the test: {leftover}"


@pytest.fixture
async def daemon(start_daemon: Callable[..., object]) -> Daemon:
    return await start_daemon()  # type: ignore[misc]


@pytest.fixture
def fake_cli(tmp_path: Path) -> Callable[[str], Path]:
    """A tiny stand-in for the CLI, for failures the real one cannot be made to produce."""

    def build(script: str) -> Path:
        path = tmp_path / f"fake-claude-{uuid.uuid4().hex[:8]}"
        path.write_text(f"#!{sys.executable}\n{script}")
        path.chmod(0o755)
        return path

    return build


JS_CLIENT = Path(__file__).parent / "js" / "openclaw_client.mjs"


@pytest.fixture(scope="session")
def openclaw_client() -> list[str]:
    """The command that runs the OpenClaw-style JS client (installed by `make test`)."""
    node = shutil.which("node")
    if node is None or not (JS_CLIENT.parent / "node_modules" / "openai").is_dir():
        pytest.fail("the openai JS SDK is not installed in tests/js; run the tests with `make test`", pytrace=False)
    return [node, str(JS_CLIENT)]


def empty_env(folder: Path) -> Path:
    """A settings file with nothing in it: the daemon's settings come from the test's environment."""
    path = folder / "empty.env"
    path.touch()
    return path


TELEGRAM_USER = 111


@pytest.fixture
async def telegram() -> FakeTelegram:
    fake = FakeTelegram()
    await fake.start()
    yield fake  # type: ignore[misc]
    await fake.stop()


@pytest.fixture
def start_bot(telegram: FakeTelegram, start_daemon: Callable[..., object]) -> Callable[..., object]:
    async def start(**overrides: object) -> Daemon:
        values: dict[str, object] = {
            "telegram_bot_token": TOKEN,
            "telegram_api_url": telegram.root,
            "telegram_allowed_users": str(TELEGRAM_USER),
            "telegram_edit_interval": 0.5,
            "telegram_permission_mode": "bypassPermissions",  # the permission tests set `ask` themselves
        }
        values.update(overrides)
        daemon: Daemon = await start_daemon(**values)  # type: ignore[assignment]
        assert daemon.app[BOT].started
        return daemon

    return start
