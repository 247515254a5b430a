"""The real Codex CLI (npm `@openai/codex`, pinned, installed by `make test`) against the daemon's Responses API.

`codex exec` runs with a provider pointed at the daemon (`wire_api = "responses"`), its whole state in a temp
CODEX_HOME, an environment built from nothing, and every proxy variable pointed at a closed loopback port
(loopback itself excepted), so nothing it tries can leave the machine.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import Turn
from tests.conftest import Daemon
from tests.mock_anthropic import MockAnthropic

ROOT = Path(__file__).resolve().parent.parent
CODEX_VERSION = "0.171.0"
CODEX = ROOT / f".cache/codex-{CODEX_VERSION}/node_modules/.bin/codex"
DEAD_END = "http://127.0.0.1:9"  # the discard port, closed: a proxy that refuses everything


@dataclass
class CodexRun:
    code: int
    stdout: str
    stderr: str


async def codex_exec(daemon: Daemon, home: Path, prompt: str, *, limit: float = 120) -> CodexRun:
    if not CODEX.exists():
        pytest.fail(f"the Codex CLI is not installed at {CODEX}; run the tests with `make test`", pytrace=False)
    (home / "codex").mkdir(parents=True, exist_ok=True)
    (home / "work").mkdir(exist_ok=True)
    (home / "codex/config.toml").write_text(
        'model = "claude-sonnet-4"\nmodel_provider = "claudemax"\n\n'
        "[model_providers.claudemax]\n"
        'name = "claude-max"\n'
        f'base_url = "{daemon.url}/v1"\n'
        'env_key = "CLAUDE_MAX_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home / "codex"),
        "CLAUDE_MAX_KEY": "sk-anything", "LANG": "C.UTF-8", "TERM": "dumb", "NO_COLOR": "1",
        "HTTP_PROXY": DEAD_END, "HTTPS_PROXY": DEAD_END, "ALL_PROXY": DEAD_END,
        "http_proxy": DEAD_END, "https_proxy": DEAD_END, "all_proxy": DEAD_END,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        str(CODEX), "exec", "--skip-git-repo-check", prompt, cwd=home / "work", env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        async with asyncio.timeout(limit):
            out, err = await process.communicate()
    except TimeoutError:
        os.killpg(process.pid, 9)
        await process.wait()
        raise
    return CodexRun(process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


async def test_codex_exec_answers(daemon: Daemon, mock_api: MockAnthropic, tmp_path: Path) -> None:
    run = await codex_exec(daemon, tmp_path, "hello from codex")
    assert run.code == 0, run.stderr
    assert "MOCK reply to: hello from codex" in run.stdout, run.stdout + run.stderr


async def test_codex_runs_its_own_tool_for_claude(daemon: Daemon, mock_api: MockAnthropic, tmp_path: Path) -> None:
    ended: list[str] = []

    async def listener(turn: Turn, error: BaseException | None) -> None:
        ended.append(turn.outcome)

    daemon.engine.on_turn_end(listener)
    run = await codex_exec(daemon, tmp_path, 'CALL_CLIENT exec_command {"cmd": "echo from-codex-$((6 * 7))"}')
    assert run.code == 0, run.stderr
    assert "from-codex-42" in run.stdout, "Codex ran the command; its output reached Claude: " + run.stdout
    assert "Tool said:" in run.stdout
    assert ended == ["ok"], "one Claude turn served both of Codex's requests (the call, then its output)"
