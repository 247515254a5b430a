"""The `claude-max` command: `serve` runs the daemon, `doctor` says what is wrong."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from core import __version__
from core.config import Settings, SettingsError, load_settings
from core.doctor import run_checks
from core.engine import Engine
from core.hygiene import AlreadyRunning
from core.logs import configure_logging
from core.store import StoreError
from proxy.app import create_app
from proxy.keys import BOT

log = logging.getLogger("claude_max")

# flag -> setting; flags override the environment and .env
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--host", "proxy_host", str, "bind address of the HTTP API (PROXY_HOST)"),
    ("--port", "proxy_port", int, "port of the HTTP API (PROXY_PORT)"),
    ("--state-dir", "state_dir", Path, "where sessions are kept (STATE_DIR)"),
    ("--workdir", "claude_workdir", Path, "the CLI's working directory (CLAUDE_WORKDIR)"),
    ("--claude-bin", "claude_bin", str, "the Claude Code executable (CLAUDE_BIN)"),
    ("--max-concurrent", "max_concurrent", int, "CLI runs at once (MAX_CONCURRENT)"),
    ("--activity-timeout", "activity_timeout", float, "seconds of CLI silence before it is killed (ACTIVITY_TIMEOUT)"),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-max",
        description="Use your Claude subscription from Telegram and OpenAI-compatible clients, "
        "through the official Claude Code CLI.",
    )
    parser.add_argument("--version", action="version", version=f"claude-max {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "run the daemon: the HTTP API, and the Telegram bot when TELEGRAM_BOT_TOKEN is set"),
        ("doctor", "check the CLI, its login, the state directory, the port and the settings"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--env-file", type=Path, default=Path(".env"), help="settings file (default: ./.env)")
        for flag, _, kind, flag_help in _FLAGS:
            sub.add_argument(flag, type=kind, default=None, help=flag_help)
        if name == "serve":
            sub.add_argument("--debug", action="store_true", help="log every request and every CLI event (DEBUG)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {"_env_file": args.env_file}
    for flag, field, _, _ in _FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides[field] = value
    if getattr(args, "debug", False):
        overrides["debug"] = "1"
    return load_settings(**overrides)


async def serve(settings: Settings) -> int:
    problems = [c for c in await run_checks(settings) if not c.ok and c.fatal]
    if problems:
        for check in problems:
            print(f"claude-max: cannot start: {check.name}: {check.detail}", file=sys.stderr)
            if check.fix:
                print(f"  fix: {check.fix}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Engine(settings) as engine:
            app = create_app(settings, engine)
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, settings.proxy_host, settings.proxy_port)
            try:
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                print(
                    f"claude-max: cannot listen on {settings.proxy_host}:{settings.proxy_port}: {exc.strerror}; "
                    "is another daemon running? (`claude-max doctor` says who holds the port)",
                    file=sys.stderr,
                )
                return 1
            log.info(
                "serving url=http://%s:%s/v1 workdir=%s state_dir=%s max_concurrent=%s warm_max=%s version=%s",
                settings.proxy_host, settings.proxy_port, settings.workdir, settings.state_dir,
                settings.max_concurrent, settings.warm_max, __version__,
            )  # fmt: skip
            await stop.wait()
            stop.clear()  # a second signal skips the grace period
            log.info("draining running_turns=%s grace_s=%s", engine.running, settings.shutdown_grace)
            if BOT in app:
                await app[BOT].stop_polling()
            drain = asyncio.create_task(engine.drain(settings.shutdown_grace))
            await asyncio.wait([drain, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
            drain.cancel()
            log.info("shutting_down running_turns=%s", engine.running)
            await runner.cleanup()
    except (StoreError, AlreadyRunning) as exc:
        print(f"claude-max: {exc}", file=sys.stderr)
        return 1
    log.info("stopped")
    return 0


async def doctor(settings: Settings) -> int:
    checks = await run_checks(settings)
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.fatal else "warn")
        print(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            print(f"       fix: {check.fix}")
    failed = [c for c in checks if not c.ok]
    print("all is well" if not failed else f"{len(failed)} problem(s) found")
    return 0 if not failed else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"claude-max: {exc}", file=sys.stderr)
        return 2
    secrets = [k.get_secret_value() for k in settings.proxy_api_keys]
    if settings.telegram_bot_token is not None:
        secrets.append(settings.telegram_bot_token.get_secret_value())
    configure_logging(debug=settings.debug_enabled, secrets=secrets)
    if args.command == "serve":
        return asyncio.run(serve(settings))
    return asyncio.run(doctor(settings))


if __name__ == "__main__":
    sys.exit(main())
