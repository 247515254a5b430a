"""The `claude-max` command: `serve` runs the daemon, `doctor` says what is wrong, and helpers
for running it for real (`service`, `usage`, `openclaw-config`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claude_max.daemon import serve
from claude_max.logs import configure_logging
from claude_max.service import ServiceError
from claude_max.service import install as install_service
from claude_max.service import plan as service_plan
from claude_max.service import uninstall as uninstall_service
from core import (
    SessionStore,
    Settings,
    SettingsError,
    UsageRow,
    WindowState,
    __version__,
    format_duration,
    load_settings,
    run_checks,
)
from proxy import openclaw

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

    def command(name: str, help_text: str, parent: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--env-file", type=Path, default=None, help="settings file (default: ./.env, if it exists)")
        for flag, _, kind, flag_help in _FLAGS:
            sub.add_argument(flag, type=kind, default=None, help=flag_help)
        return sub

    serve_command = command(
        "serve", "run the daemon: the HTTP API, and the Telegram bot when TELEGRAM_BOT_TOKEN is set"
    )
    serve_command.add_argument("--debug", action="store_true", help="log every request and every CLI event (DEBUG)")
    command("doctor", "check the CLI, its login, the state directory, the port, Telegram and the settings")
    usage = command("usage", "tokens and cost of the last days, by day, face (http/telegram) and model")
    usage.add_argument("--days", type=int, default=7, help="how many days back (default: 7)")
    openclaw = command("openclaw-config", "print a provider block for OpenClaw's openclaw.json")
    openclaw.add_argument("--public-host", default=None, help="host name clients use to reach the proxy")
    service = commands.add_parser("service", help="install or remove the daemon as a user service (systemd, launchd)")
    service_commands = service.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("install", "write the unit (systemd user unit on Linux, launchd agent on macOS) and start it"),
        ("uninstall", "stop the service and remove its unit"),
    ):
        sub = command(action, help_text, service_commands)
        sub.add_argument("--no-start", action="store_true", help="only write or remove the file; print the commands")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    if args.env_file is not None and not args.env_file.exists():  # /dev/null is fine: no settings at all
        raise SettingsError(f"--env-file {args.env_file} does not exist")
    if args.env_file is not None and args.env_file.is_dir():
        raise SettingsError(f"--env-file {args.env_file} is a directory, not a settings file")
    args.env_file = args.env_file or Path(".env")
    overrides: dict[str, object] = {"_env_file": args.env_file}
    for flag, field, _, _ in _FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides[field] = value
    if getattr(args, "debug", False):
        overrides["debug"] = "1"
    return load_settings(**overrides)


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


async def usage(settings: Settings, days: int) -> int:
    store = SessionStore(settings.state_dir)
    await store.open()
    try:
        rows = await store.usage_by_day(time.time() - days * 86400)
        windows = await store.limits()
    finally:
        await store.close()
    if not rows:
        print(f"no turns in the last {days} days")
    else:
        _print_usage_table(rows)
    if windows:
        _print_windows(windows)
    return 0


def _print_windows(states: list[WindowState]) -> None:
    """The subscription's windows as the CLI last reported them, with how old that is."""
    now = time.time()
    print("\nsubscription windows (as the CLI last reported them):")
    for state in sorted(states, key=lambda s: s.window.name):
        window = state.current(now)
        used = f"{window.utilization * 100:.0f}% used" if window.utilization is not None else "use unknown"
        resets = ""
        if window.resets_at is not None:
            at = datetime.fromtimestamp(window.resets_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            resets = f", resets {at} (in {format_duration(window.resets_at - now)})"
        status = f", {window.status}" if window.status else ""
        print(f"  {window.name}: {used}{resets}{status}; seen {format_duration(now - state.observed_at)} ago")


def _print_usage_table(rows: list[UsageRow]) -> None:
    header = ("day", "face", "model", "turns", "prompt tokens", "completion tokens", "cached", "cost USD")
    table = [header] + [
        (r.day, r.face, r.model, str(r.turns), f"{r.prompt_tokens:,}", f"{r.completion_tokens:,}",
         f"{r.cached_tokens:,}", f"{r.cost_usd:.4f}")
        for r in rows
    ]  # fmt: skip
    total = (
        "total", "", "", str(sum(r.turns for r in rows)), f"{sum(r.prompt_tokens for r in rows):,}",
        f"{sum(r.completion_tokens for r in rows):,}", f"{sum(r.cached_tokens for r in rows):,}",
        f"{sum(r.cost_usd for r in rows):.4f}",
    )  # fmt: skip
    table.append(total)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        print(
            "  ".join(
                cell.rjust(w) if i >= 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0 or index == len(table) - 2:
            print("  ".join("-" * w for w in widths))


def service(settings: Settings, args: argparse.Namespace) -> int:
    try:
        unit = service_plan(settings, env_file=args.env_file)
    except ServiceError as exc:
        print(f"claude-max: {exc}", file=sys.stderr)
        return 1
    if args.action == "install":
        if not args.env_file.is_file():
            print(
                f"warning: {args.env_file.resolve()} does not exist: the service will run with the defaults. Settings "
                "exported in this shell are not carried into the service: put them in that file (see .env.example).",
                file=sys.stderr,
            )
        pending = install_service(unit, start=not args.no_start)
        print(f"wrote {unit.path}")
    else:
        existed, pending = uninstall_service(unit, stop=not args.no_start)
        print(f"removed {unit.path}" if existed else f"{unit.path} was not installed")
        if pending:
            print("if the service still runs, stop it:")
    if pending:
        print("run these yourself:", *pending, sep="\n  ")
    for note in unit.notes if args.action == "install" else []:
        print(note)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"claude-max: {exc}", file=sys.stderr)
        return 2
    secrets = [k.get_secret_value() for k in settings.proxy_api_keys]
    child = settings.child_environment()  # the CLI's own credentials are secrets too
    secrets += [child[name] for name in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN")
                if child.get(name)]  # fmt: skip
    if settings.telegram_bot_token is not None:
        secrets.append(settings.telegram_bot_token.get_secret_value())
    configure_logging(debug=settings.debug_enabled, secrets=secrets)
    if args.command == "serve":
        return asyncio.run(serve(settings))
    if args.command == "usage":
        return asyncio.run(usage(settings, args.days))
    if args.command == "openclaw-config":
        print(openclaw.render(settings, args.public_host))
        return 0
    if args.command == "service":
        return service(settings, args)
    return asyncio.run(doctor(settings))


if __name__ == "__main__":
    sys.exit(main())
