"""The `claude-max` command itself, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from tests.conftest import cmdline, empty_env, processes_marked, running_commands, wait_no_processes
from tests.mock_anthropic import CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, INPUT_TOKENS, MockAnthropic

COMMAND = Path(sys.executable).parent / "claude-max"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run(
    *args: str, env: dict[str, str] | None = None, within: float = 60, cwd: Path | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(COMMAND), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip
    async with asyncio.timeout(within):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def daemon_env(cli_env: str, claude_cli: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "CLAUDE_BIN": str(claude_cli),
        "STATE_DIR": str(tmp_path / "state"),
        "PROXY_PORT": str(free_port()),
        "SHUTDOWN_GRACE": "1",
    }


async def start_serving(env: dict[str, str], tmp_path: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        str(COMMAND), "serve", "--env-file", str(empty_env(tmp_path)),
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    assert process.stderr is not None
    async with asyncio.timeout(20):
        while b"event=serving" not in await process.stderr.readline():
            pass
    return process


@pytest.fixture
async def serve(daemon_env: dict[str, str], tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await start_serving(daemon_env, tmp_path)
    yield process
    if process.returncode is None:
        process.kill()
        await process.wait()


async def test_serve_answers_and_stops_cleanly_on_sigterm(
    serve: asyncio.subprocess.Process, daemon_env: dict[str, str], cli_env: str, mock_api: MockAnthropic
) -> None:
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{daemon_env['PROXY_PORT']}/v1", api_key="x", max_retries=0)
    completion = await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "MOCK reply to: hi"
    hanging = asyncio.create_task(
        client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "HANG"}])
    )
    while mock_api.hanging == 0:
        await asyncio.sleep(0.05)
    serve.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        code = await serve.wait()
    assert code == 0
    with pytest.raises(openai.APIError):
        await hanging
    await client.close()
    assert await wait_no_processes(cli_env, within=5) == [], "no CLI outlives the daemon"
    assert serve.stderr is not None
    log = (await serve.stderr.read()).decode()
    assert "event=stopped" in log and "sk-test-not-a-real-key" not in log


async def test_sigterm_drains_running_turns_then_stops(
    daemon_env: dict[str, str], cli_env: str, mock_api: MockAnthropic, tmp_path: Path
) -> None:
    """SIGTERM with 4 turns running: they finish within the grace period, new requests get 503."""
    serve = await start_serving({**daemon_env, "SHUTDOWN_GRACE": "20"}, tmp_path)
    try:
        url = f"http://127.0.0.1:{daemon_env['PROXY_PORT']}/v1"
        client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)
        tools = [{"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}]
        # A request with the client's own tools first: it starts the MCP server, which must not take the signal.
        await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}], tools=tools)
        # Each answer streams for 5 s, so all four are running at once even when CLIs are slow to start.
        ask = "LONG100 SLOW {}"
        running = [
            asyncio.create_task(
                client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": ask.format(i)}])
            )
            for i in range(4)
        ]
        async with asyncio.timeout(60):  # never hang: fail
            while mock_api.in_flight < 4:
                await asyncio.sleep(0.02)
        serve.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "too late"}])
        assert caught.value.status_code == 503 and caught.value.code == "shutting_down"
        answers = await asyncio.gather(*running)
        assert all(a.choices[0].message.content == "".join(f"w{n} " for n in range(100)) for a in answers)
        async with asyncio.timeout(30):
            assert await serve.wait() == 0
        await client.close()
        assert await wait_no_processes(cli_env, within=5) == []
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()


async def test_sigkill_leftovers_are_reaped_by_the_next_start(
    daemon_env: dict[str, str], cli_env: str, mock_api: MockAnthropic, tmp_path: Path
) -> None:
    first = await asyncio.create_subprocess_exec(
        str(COMMAND), "serve", env={**os.environ, **daemon_env}, stderr=asyncio.subprocess.PIPE
    )
    assert first.stderr is not None
    while b"event=serving" not in await first.stderr.readline():
        pass
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{daemon_env['PROXY_PORT']}/v1", api_key="x", max_retries=0)
    turn = asyncio.create_task(
        client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "SLEEP_TOOL"}])
    )
    while not running_commands(cli_env, b"time.sleep"):
        await asyncio.sleep(0.05)
    first.kill()  # SIGKILL: no cleanup at all
    await first.wait()
    with pytest.raises(openai.APIError):
        await turn
    await client.close()
    # The CLI dies with the daemon (parent-death signal); the tool's command it started is orphaned.
    for _ in range(50):
        if not running_commands(cli_env, b"--output-format"):
            break
        await asyncio.sleep(0.1)
    assert running_commands(cli_env, b"--output-format") == []
    orphans = running_commands(cli_env, b"time.sleep")
    assert orphans, "the orphaned tool command survives the SIGKILL"
    second = await asyncio.create_subprocess_exec(
        str(COMMAND), "serve", env={**os.environ, **daemon_env}, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert second.stderr is not None
        log = b""
        while b"event=serving" not in (line := await second.stderr.readline()):
            log += line
        assert b"event=reaped_leftovers processes=" in log
        for _ in range(50):
            leftover = [pid for pid in processes_marked(cli_env) if pid != second.pid]
            if not leftover:
                break
            await asyncio.sleep(0.1)
        assert leftover == [], [b" ".join(cmdline(pid)) for pid in leftover]
    finally:
        second.terminate()
        assert await second.wait() == 0


async def test_a_second_daemon_on_the_same_state_is_refused(
    serve: asyncio.subprocess.Process, daemon_env: dict[str, str]
) -> None:
    code, _, err = await run("serve", "--port", str(free_port()), env=daemon_env)
    assert code == 1 and f"another claude-max (pid {serve.pid}) is running" in err
    code, _, err = await run("serve", "--state-dir", daemon_env["STATE_DIR"] + "-other", env=daemon_env)
    assert code == 1 and "is another daemon running?" in err


async def test_bad_setting_stops_the_start(daemon_env: dict[str, str]) -> None:
    code, _, err = await run("serve", env={**daemon_env, "MAX_CONCURRENT": "lots"})
    assert code == 2 and "MAX_CONCURRENT" in err


async def test_refuses_to_expose_without_keys(daemon_env: dict[str, str]) -> None:
    code, _, err = await run("serve", "--host", "0.0.0.0", env=daemon_env)
    assert code == 2 and "PROXY_API_KEYS" in err


async def test_port_in_use_is_a_clear_error(daemon_env: dict[str, str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(daemon_env["PROXY_PORT"])))
        holder.listen()
        code, _, err = await run("serve", env=daemon_env)
    assert code == 2 and "cannot listen on 127.0.0.1" in err and f"held by pid {os.getpid()}" in err


async def test_start_with_the_cli_missing_is_refused(daemon_env: dict[str, str]) -> None:
    code, _, err = await run("serve", env={**daemon_env, "CLAUDE_BIN": "/nowhere/claude"})
    assert code == 2 and "cannot start: Claude Code CLI" in err and "npm install -g @anthropic-ai/claude-code" in err


async def test_start_not_logged_in_is_refused(daemon_env: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env.update(daemon_env)
    process = await asyncio.create_subprocess_exec(
        str(COMMAND), "serve", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    _, err = await process.communicate()
    assert process.returncode == 2 and "not logged in" in err.decode() and "claude auth login" in err.decode()


async def test_doctor_all_well(daemon_env: dict[str, str]) -> None:
    code, out, _ = await run("doctor", env=daemon_env)
    assert code == 0, out
    assert "2.1.331" in out and "logged in" in out and "all is well" in out


async def test_doctor_explains_what_is_wrong(daemon_env: dict[str, str], tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state directory should be")
    env = {**daemon_env, "CLAUDE_BIN": "no-such-claude", "STATE_DIR": str(blocked), "PROXY_HOST": "0.0.0.0"}
    code, out, _ = await run("doctor", env=env)
    assert code == 1
    assert "no-such-claude" in out and "npm install -g @anthropic-ai/claude-code" in out
    assert "STATE_DIR" in out and "PROXY_API_KEYS" in out


async def test_a_missing_env_file_is_an_error(daemon_env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = await run("serve", "--env-file", str(tmp_path / "nope.env"), env=daemon_env)
    assert code == 2 and "nope.env does not exist" in err
    code, _, err = await run("serve", "--env-file", str(tmp_path), env=daemon_env)
    assert code == 2 and "is a directory, not a settings file" in err
    code, out, _ = await run("doctor", "--env-file", os.devnull, env=daemon_env)  # no settings file at all
    assert code == 0 and "all is well" in out, out
    env = {**daemon_env, "XDG_CONFIG_HOME": str(tmp_path)}
    code, _, err = await run("service", "install", "--no-start", env=env, cwd=tmp_path)  # no .env there
    assert code == 0 and "does not exist: the service will run with the defaults" in err


async def test_help() -> None:
    for args in (["--help"], ["serve", "--help"], ["doctor", "--help"]):
        code, out, _ = await run(*args)
        assert code == 0 and "usage: claude-max" in out


async def test_unusable_state_dir_is_a_clear_error(daemon_env: dict[str, str], tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    code, _, err = await run("serve", env={**daemon_env, "STATE_DIR": str(blocked / "state")})
    assert code == 2 and "Traceback" not in err
    assert "not writable" in err and "STATE_DIR" in err


async def test_doctor_recognises_its_own_running_daemon(
    serve: asyncio.subprocess.Process, daemon_env: dict[str, str]
) -> None:
    code, out, _ = await run("doctor", env=daemon_env)
    assert code == 0, out
    assert f"served by a running claude-max (pid {serve.pid}" in out


async def test_doctor_names_who_holds_the_port(daemon_env: dict[str, str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(daemon_env["PROXY_PORT"])))
        holder.listen()
        code, out, _ = await run("doctor", env=daemon_env)
    assert code == 1
    assert f"held by pid {os.getpid()}" in out


async def test_usage_command_shows_what_ran(daemon_env: dict[str, str], mock_api: MockAnthropic) -> None:
    process = await asyncio.create_subprocess_exec(
        str(COMMAND), "serve", env={**os.environ, **daemon_env}, stderr=asyncio.subprocess.DEVNULL
    )
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{daemon_env['PROXY_PORT']}/v1", api_key="x", max_retries=0)
    for _ in range(100):
        try:
            await client.models.list()
            break
        except openai.APIConnectionError:
            await asyncio.sleep(0.1)
    for text in ("one", "two"):
        await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": text}])
    await client.close()
    process.terminate()
    await process.wait()
    code, out, _ = await run("usage", "--days", "1", env=daemon_env)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["day", "face", "model"]
    row = next(line for line in lines if " http " in line)
    assert row.split()[3] == "2", "two turns"
    prompt = 2 * (INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS)
    assert f"{prompt:,}" in row and lines[-1].startswith("total")


async def test_openclaw_config(daemon_env: dict[str, str]) -> None:
    code, out, _ = await run("openclaw-config", env={**daemon_env, "PROXY_API_KEYS": "sk-claw-0123456789abc"})
    assert code == 0
    config = json.loads(out)
    provider = config["models"]["providers"]["claude-max"]
    assert provider["baseUrl"] == f"http://127.0.0.1:{daemon_env['PROXY_PORT']}/v1"
    assert provider["apiKey"] == "sk-claw-0123456789abc" and provider["api"] == "openai-completions"
    assert [m["id"] for m in provider["models"]] == ["claude-opus-4", "claude-sonnet-4", "claude-haiku-4"]
    assert all(m["contextWindow"] >= 200_000 and m["maxTokens"] > 0 and m["reasoning"] for m in provider["models"])
    assert config["agents"]["defaults"]["model"]["primary"] == "claude-max/claude-sonnet-4"
    assert "request" not in provider, "loopback needs no exception from OpenClaw's private-network guard"
    for host in ("some.lan", "192.168.1.5", "my-host"):
        code, out, _ = await run("openclaw-config", "--public-host", host, env=daemon_env)
        provider = json.loads(out)["models"]["providers"]["claude-max"]
        assert provider["baseUrl"] == f"http://{host}:{daemon_env['PROXY_PORT']}/v1"
        assert provider["request"] == {"allowPrivateNetwork": True}, "OpenClaw refuses such hosts without it"


async def test_service_install_and_uninstall(daemon_env: dict[str, str], tmp_path: Path, claude_cli: Path) -> None:
    env = {**daemon_env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    env_file = tmp_path / "app" / ".env"
    env_file.parent.mkdir()
    env_file.write_text("PROXY_PORT=4777\n")
    code, out, _ = await run("service", "install", "--no-start", "--env-file", str(env_file), env=env)
    assert code == 0
    unit_path = tmp_path / "xdg/systemd/user/claude-max.service"
    unit = unit_path.read_text()
    assert f"ExecStart={sys.executable} -m claude_max.cli serve --env-file {env_file}" in unit
    assert f"WorkingDirectory={env_file.parent}" in unit and "Restart=on-failure" in unit
    assert f"Environment=CLAUDE_BIN={claude_cli}" in unit
    path_line = next(line for line in unit.splitlines() if line.startswith("Environment=PATH="))
    assert str(claude_cli.parent) in path_line.split("=", 2)[2].split(":")
    assert "systemctl --user enable --now claude-max" in out and "loginctl enable-linger" in out
    code, out, _ = await run("service", "uninstall", "--no-start", "--env-file", str(env_file), env=env)
    assert code == 0 and not unit_path.exists()


def test_launchd_agent_for_macos(tmp_path: Path, claude_cli: Path) -> None:
    import plistlib

    from claude_max.service import plan
    from core.config import Settings

    settings = Settings(_env_file=None, claude_bin=str(claude_cli))
    agent = plan(settings, env_file=tmp_path / ".env", platform="darwin")
    assert agent.path.name == "com.claude-max.daemon.plist" and "LaunchAgents" in str(agent.path)
    parsed = plistlib.loads(agent.content)
    assert parsed["ProgramArguments"][:4] == [sys.executable, "-m", "claude_max.cli", "serve"]
    assert parsed["KeepAlive"] == {"SuccessfulExit": False} and parsed["RunAtLoad"] is True
    assert parsed["EnvironmentVariables"]["CLAUDE_BIN"] == str(claude_cli)
    assert agent.start[0][:2] == ["launchctl", "bootstrap"]
