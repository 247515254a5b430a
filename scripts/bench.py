"""Benchmark: the proxy against the CLI run directly, side by side, on the mock Anthropic API.

    make bench            # or: .venv/bin/python scripts/bench.py --runs 15

Starts the mock API (in this process), runs the pinned CLI directly as the floor, then two
daemons (`claude-max serve` subprocesses: warm sessions off, and on) and prints one table.
Every figure is a median over --runs runs unless it says otherwise. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.render import draft, render  # noqa: E402
from tests.mock_anthropic import MockAnthropic, long_markdown  # noqa: E402

CLI_FLAGS = ["-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
             "--include-partial-messages", "--permission-mode", "bypassPermissions", "--model", "sonnet"]  # fmt: skip
MARK = "CLAUDE_MAX_BENCH_MARK"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Timing:
    first_token: float
    last_byte: float


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime of the daemon itself


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cli_processes(mark: str) -> int:
    needle = f"{MARK}={mark}".encode()
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (
                needle in (entry / "environ").read_bytes().split(b"\0")
                and b"--output-format" in (entry / "cmdline").read_bytes()
            ):
                count += 1
        except OSError:
            continue
    return count


def user_message(text: str) -> bytes:
    message = {
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": None,
        "session_id": "",
    }
    return json.dumps(message).encode() + b"\n"


async def direct_turn(
    cli: str, env: dict[str, str], cwd: Path, text: str, resume: str | None = None
) -> tuple[Timing, str]:
    """One turn of the CLI run directly, as the proxy runs it: the floor."""
    started = time.perf_counter()
    argv = [cli, *CLI_FLAGS, *(["--resume", resume] if resume else [])]
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        cwd=cwd, env=env, limit=1 << 24,
    )  # fmt: skip
    assert process.stdin and process.stdout
    process.stdin.write(user_message(text))
    await process.stdin.drain()
    first = None
    session = ""
    while line := await process.stdout.readline():
        event = json.loads(line)
        if (
            first is None
            and event.get("type") == "stream_event"
            and event["event"].get("type") == "content_block_delta"
        ):
            first = time.perf_counter() - started
        if event.get("type") == "result":
            session = event["session_id"]
            break
    last = time.perf_counter() - started
    process.stdin.close()
    await process.wait()
    return Timing(first or last, last), session


class PersistentCLI:
    """One CLI process kept open, a turn written to its stdin at a time: the floor of a warm turn."""

    def __init__(self, cli: str, env: dict[str, str], cwd: Path) -> None:
        self._argv = [cli, *CLI_FLAGS]
        self._env, self._cwd = env, cwd
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> PersistentCLI:
        self._process = await asyncio.create_subprocess_exec(
            *self._argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, cwd=self._cwd, env=self._env, limit=1 << 24,
        )  # fmt: skip
        return self

    async def turn(self, text: str) -> Timing:
        assert self._process and self._process.stdin and self._process.stdout
        started = time.perf_counter()
        self._process.stdin.write(user_message(text))
        await self._process.stdin.drain()
        first = None
        while line := await self._process.stdout.readline():
            event = json.loads(line)
            if (
                first is None
                and event.get("type") == "stream_event"
                and event["event"].get("type") == "content_block_delta"
            ):
                first = time.perf_counter() - started
            if event.get("type") == "result":
                break
        last = time.perf_counter() - started
        return Timing(first or last, last)

    async def __aexit__(self, *exc: object) -> None:
        assert self._process and self._process.stdin
        self._process.stdin.close()
        await self._process.wait()


def _chat(text: str) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": text}]}


def _responses(text: str) -> tuple[str, dict[str, Any]]:
    return "/v1/responses", {"model": "sonnet", "stream": True, "input": text, "store": False}


def _messages(text: str) -> tuple[str, dict[str, Any]]:
    return "/v1/messages", {"model": "sonnet", "stream": True, "max_tokens": 1024,
                            "messages": [{"role": "user", "content": text}]}  # fmt: skip


def _delta(dialect: str, event: dict[str, Any]) -> tuple[bool, bool]:
    """(a piece of answer text, the end) of one streamed event in `dialect`."""
    if ("error" in event and dialect == "chat") or event.get("type") in ("error", "response.failed"):
        raise RuntimeError(json.dumps(event)[:300])
    if dialect == "chat":
        return bool(event["choices"] and event["choices"][0]["delta"].get("content")), False
    if dialect == "responses":
        return event["type"] == "response.output_text.delta", event["type"] == "response.completed"
    return event["type"] == "content_block_delta" and "text" in event["delta"], event["type"] == "message_stop"


DIALECTS = {"chat": _chat, "responses": _responses, "messages": _messages}


async def proxy_turn(
    session: aiohttp.ClientSession, url: str, text: str, conversation: str, dialect: str = "chat"
) -> tuple[Timing, int]:
    """One streamed turn through the proxy, in one of its dialects: time to the first text and to the end."""
    started = time.perf_counter()
    first = None
    deltas = 0
    path, body = DIALECTS[dialect](text)
    async with session.post(f"{url}{path}", json=body, headers={"X-Conversation-Id": conversation}) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
        async for raw in r.content:
            if not raw.startswith(b"data: "):
                continue
            if raw.startswith(b"data: [DONE]"):
                break
            text_piece, end = _delta(dialect, json.loads(raw[6:]))
            if text_piece:
                deltas += 1
                if first is None:
                    first = time.perf_counter() - started
            if end:
                break
    last = time.perf_counter() - started
    return Timing(first or last, last), deltas


class Daemon:
    def __init__(self, command: str, env: dict[str, str], state: Path, **settings: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "STATE_DIR": str(state), "PROXY_PORT": str(self.port), **settings}
        self.command = command
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Daemon:
        self.process = await asyncio.create_subprocess_exec(
            self.command, "serve", "--env-file", os.devnull, env=self.env,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stderr
        while b"event=serving" not in (line := await self.process.stderr.readline()):
            if not line:
                raise RuntimeError(f"claude-max serve exited with status {await self.process.wait()}")
        self._drainer = asyncio.create_task(self._drain())
        return self

    async def _drain(self) -> None:
        assert self.process and self.process.stderr
        while await self.process.stderr.readline():
            pass

    @property
    def pid(self) -> int:
        assert self.process
        return self.process.pid

    async def __aexit__(self, *exc: object) -> None:
        assert self.process
        self.process.terminate()
        await self.process.wait()


async def settle(mark: str, at_most: int) -> None:
    """Until at most `at_most` CLIs run: the direct runs wait for their CLI to exit, so these do too."""
    for _ in range(200):
        if cli_processes(mark) <= at_most:
            return
        await asyncio.sleep(0.01)


def rendering_rows() -> list[tuple[str, str]]:
    """The bot's CPU per draft while Claude writes (once a second per turn) and per answer, for a 20 KB
    Markdown answer: its whole text (render) and the draft of it and of its first half (draft)."""
    answer = long_markdown()
    rows = []
    for name, work in (
        (f"Telegram: answer of {len(answer) // 1000} KB rendered into messages", lambda: render(answer)),
        (f"Telegram: draft of that answer ({len(answer) // 1000} KB so far)", lambda: draft(answer)),
        ("Telegram: draft of its first half", lambda: draft(answer[: len(answer) // 2])),
    ):
        times = []
        for _ in range(50):
            started = time.process_time()
            work()
            times.append(time.process_time() - started)
        rows.append((name, f"{statistics.median(times) * 1000:.1f} ms CPU"))
    return rows


def machine() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


async def main(args: argparse.Namespace) -> None:
    cli = args.cli
    mock = MockAnthropic()
    await mock.start()
    workdir = Path(tempfile.mkdtemp(prefix="claude-max-bench-"))
    mark = uuid.uuid4().hex
    env = {
        **os.environ, "HOME": str(workdir / "home"), "CLAUDE_CONFIG_DIR": str(workdir / "home/.claude"),
        "ANTHROPIC_BASE_URL": mock.base_url, "ANTHROPIC_API_KEY": "sk-bench", "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "IS_SANDBOX": "1", "CLAUDE_BIN": cli, MARK: mark,
    }  # fmt: skip
    env.pop("CLAUDECODE", None)
    cwd = workdir / "cwd"
    cwd.mkdir(parents=True)
    (workdir / "home").mkdir()
    runs = args.runs
    rows: list[tuple[str, str]] = []

    command = str(Path(sys.executable).parent / "claude-max")
    cold = Daemon(command, env, workdir / "state-cold", WARM_MAX="0")
    warm = Daemon(command, env, workdir / "state-warm", MAX_CONCURRENT="16", WARM_MAX="20")
    persistent = PersistentCLI(cli, {k: v for k, v in env.items() if k != MARK}, cwd)  # not in the CLI counts
    async with aiohttp.ClientSession() as http, cold, warm, persistent:
        idle_rss = rss_mb(warm.pid)
        # Warm-up, then the conversations that later runs continue.
        await direct_turn(cli, env, cwd, "warm up the disk cache")
        _, base_session = await direct_turn(cli, env, cwd, "a conversation to resume")
        await proxy_turn(http, cold.url, "start", "resume")
        await proxy_turn(http, warm.url, "start", "warm")
        for dialect in ("responses", "messages"):
            await proxy_turn(http, warm.url, "start", f"warm-{dialect}", dialect)
        await persistent.turn("start")
        cold_cpu = cpu_seconds(cold.pid)
        direct_new: list[Timing] = []
        direct_resume: list[Timing] = []
        proxy_new: list[Timing] = []
        proxy_resume: list[Timing] = []
        proxy_warm: list[Timing] = []
        direct_warm: list[Timing] = []
        # The other dialects' warm turns, each paired with a persistent CLI turn of its own.
        dialect_warm: dict[str, list[tuple[Timing, Timing]]] = {"responses": [], "messages": []}
        # Side by side: each run measures every case once, so drift hits all of them alike.
        for i in range(runs):
            await settle(mark, 1)
            direct_new.append((await direct_turn(cli, env, cwd, f"hello {i}"))[0])
            await settle(mark, 1)
            proxy_new.append((await proxy_turn(http, cold.url, f"hello {i}", f"new-{i}"))[0])
            await settle(mark, 1)
            direct_resume.append((await direct_turn(cli, env, cwd, f"again {i}", base_session))[0])
            await settle(mark, 1)
            proxy_resume.append((await proxy_turn(http, cold.url, f"again {i}", "resume"))[0])
            await settle(mark, 1)
            proxy_warm.append((await proxy_turn(http, warm.url, f"again {i}", "warm"))[0])
            direct_warm.append(await persistent.turn(f"again {i}"))
            for dialect, pairs in dialect_warm.items():
                through = (await proxy_turn(http, warm.url, f"again {i}", f"warm-{dialect}", dialect))[0]
                pairs.append((through, await persistent.turn(f"again {i}")))
        cold_cpu = (cpu_seconds(cold.pid) - cold_cpu) / (2 * runs)
        await settle(mark, 1)
        direct_concurrent = await asyncio.gather(
            *(direct_turn(cli, env, cwd, f"concurrent {i} LONG50") for i in range(16))
        )
        direct_firsts = [timing.first_token for timing, _ in direct_concurrent]
        # 4. Sixteen concurrent streaming conversations.
        before = cli_processes(mark)
        cpu_before = cpu_seconds(warm.pid)
        peak = {"rss": 0.0, "clis": 0}

        async def sample() -> None:
            while True:
                peak["rss"] = max(peak["rss"], rss_mb(warm.pid))
                peak["clis"] = max(peak["clis"], cli_processes(mark))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(
            *(proxy_turn(http, warm.url, f"concurrent {i} LONG50", f"conc-{i}") for i in range(16)),
            return_exceptions=True,
        )
        sampler.cancel()
        concurrent_cpu = cpu_seconds(warm.pid) - cpu_before
        errors = [r for r in results if isinstance(r, BaseException)]
        firsts = [r[0].first_token for r in results if not isinstance(r, BaseException)]

        # 5. A long answer: 10,000 deltas through a warm session.
        await proxy_turn(http, warm.url, "prime", "long")
        cpu_before = cpu_seconds(warm.pid)
        long_timing, long_deltas = await proxy_turn(http, warm.url, "LONG10000", "long")
        long_cpu = cpu_seconds(warm.pid) - cpu_before
        dialect_long: dict[str, float] = {}  # daemon CPU per delta
        for dialect in ("chat", "responses", "messages"):  # (chat again, beside them: the same conditions)
            await proxy_turn(http, warm.url, "prime", f"long-{dialect}", dialect)
            cpu_before = cpu_seconds(warm.pid)
            _, deltas = await proxy_turn(http, warm.url, "LONG10000", f"long-{dialect}", dialect)
            dialect_long[dialect] = (cpu_seconds(warm.pid) - cpu_before) / max(deltas, 1)
        await asyncio.sleep(args.settle)
        after_idle = cli_processes(mark)
    after_stop = cli_processes(mark)
    await mock.stop()
    shutil.rmtree(workdir, ignore_errors=True)

    def pair(name: str, timings: list[Timing]) -> None:
        rows.append((f"{name}: time to first token", f"{median_ms([t.first_token for t in timings]):.0f} ms"))
        rows.append((f"{name}: time to last byte", f"{median_ms([t.last_byte for t in timings]):.0f} ms"))

    pair("CLI direct, new session (floor)", direct_new)
    pair("CLI direct, --resume (floor)", direct_resume)
    pair("proxy, new conversation (cold spawn)", proxy_new)
    pair("proxy, continuing cold (--resume)", proxy_resume)
    pair("CLI direct, persistent process (floor of a warm turn)", direct_warm)
    pair("proxy, continuing warm", proxy_warm)

    def overhead(proxy: list[Timing], direct: list[Timing]) -> str:
        """Median of the paired differences: each run's proxy turn minus the direct turn next to it."""
        first = median_ms([p.first_token - d.first_token for p, d in zip(proxy, direct, strict=True)])
        last = median_ms([p.last_byte - d.last_byte for p, d in zip(proxy, direct, strict=True)])
        return f"{first:+.1f} ms first token, {last:+.1f} ms last byte"

    rows.append(("proxy overhead, new conversation", overhead(proxy_new, direct_new)))
    rows.append(("proxy overhead, cold --resume", overhead(proxy_resume, direct_resume)))
    rows.append(("proxy overhead, warm (against the persistent CLI)", overhead(proxy_warm, direct_warm)))
    for dialect, pairs in dialect_warm.items():
        through, direct = [p for p, _ in pairs], [d for _, d in pairs]
        pair(f"proxy, continuing warm, /v1/{dialect}", through)
        rows.append((f"proxy overhead, warm, /v1/{dialect} (against the persistent CLI)", overhead(through, direct)))
    rows.append(("daemon CPU per cold turn (its own work, no CLI)", f"{cold_cpu * 1000:.1f} ms"))
    speedup = median_ms([t.first_token for t in proxy_resume]) / median_ms([t.first_token for t in proxy_warm])
    rows.append(("warm vs cold --resume, time to first token", f"{speedup:.1f}x faster"))
    rows.append(("16 concurrent streams: completed / errors", f"{16 - len(errors)} / {len(errors)}"))

    def spread(values: list[float]) -> str:
        return f"{percentile(values, 0.5) * 1000:.0f} / {percentile(values, 0.95) * 1000:.0f} ms"

    if firsts:
        rows.append(("16 concurrent streams: time to first token p50 / p95", spread(firsts)))
    rows.append(("16 concurrent CLIs run directly (floor): p50 / p95", spread(direct_firsts)))
    rows.append(("16 concurrent streams: daemon CPU", f"{concurrent_cpu:.2f} s"))
    stream_seconds = long_timing.last_byte - long_timing.first_token
    rows.append(("long answer: deltas through the proxy", f"{long_deltas} in {stream_seconds:.2f} s = "
                 f"{long_deltas / max(stream_seconds, 1e-9):,.0f} deltas/s"))  # fmt: skip
    rows.append(("long answer: daemon CPU per delta", f"{long_cpu / max(long_deltas, 1) * 1e6:.0f} µs"))
    rows.append(("long answer: daemon CPU per delta, chat / responses / messages (side by side)",
                 " / ".join(f"{dialect_long[d] * 1e6:.0f} µs" for d in ("chat", "responses", "messages"))))  # fmt: skip
    rows.append(("daemon RSS idle / under 16 streams", f"{idle_rss:.0f} / {peak['rss']:.0f} MB"))
    rows.append(("CLI processes before / peak during / after idle / after stop",
                 f"{before} / {peak['clis']} / {after_idle} / {after_stop}"))  # fmt: skip
    rows += rendering_rows()

    width = max(len(name) for name, _ in rows)
    cpu = machine()
    print(f"claude-max benchmark: {runs} runs per median, {os.cpu_count()} cores ({cpu}), "
          f"Python {platform.python_version()}, CLI {cli}")  # fmt: skip
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    if errors:
        print("errors:", *{str(e) for e in errors}, sep="\n  ")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait before counting idle CLIs")
    parser.add_argument(
        "--cli",
        default=os.environ.get("CLAUDE_MAX_TEST_CLI")
        or str(ROOT / ".cache/claude-code-2.1.331/node_modules/.bin/claude"),
    )
    asyncio.run(main(parser.parse_args()))
