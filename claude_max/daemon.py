"""The daemon: the engine and its faces composed on one event loop, and the order they stop in.

`compose()` builds the aiohttp application that is the whole daemon; production (`serve()`)
and the tests run the same one. Its cleanup contexts enter the engine once, then the bot (when
a token is set); aiohttp leaves them in the reverse order. Stopping, in one place:

1. a signal: the bot stops polling, new turns are refused (503), running turns get
   SHUTDOWN_GRACE to finish (a second signal skips the wait);
2. `on_shutdown`, before aiohttp waits for its handlers: the remaining turns are cancelled,
   so none holds the shutdown, and turns waiting for tool results are released;
3. the cleanup contexts: the bot stops, then the engine closes (processes killed, store closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from core import AlreadyRunning, Engine, Settings, StoreError, __version__, run_checks
from proxy.app import create_app
from proxy.keys import ENGINE
from proxy.listener import GuardedSite, app_runner

log = logging.getLogger("claude_max")

if TYPE_CHECKING:
    from bot.app import ClaudeBot

BOT: web.AppKey[ClaudeBot] = web.AppKey("bot")


def compose(settings: Settings, *, engine: Callable[[Settings], Engine] = Engine) -> web.Application:
    """The daemon as an aiohttp application: the HTTP face, with the engine and the bot in its lifetime.
    `engine` builds the engine (the fast tests hand in a scripted one with the same public API)."""
    app = create_app(settings)

    async def engine_context(app: web.Application) -> AsyncIterator[None]:
        async with engine(settings) as built:
            app[ENGINE] = built
            yield

    async def bot_context(app: web.Application) -> AsyncIterator[None]:
        # PTB's opt-in to RetryAfter.retry_after as a timedelta (the old int warns); set when the bot starts,
        # not when a module is imported. The bot reads either kind.
        os.environ.setdefault("PTB_TIMEDELTA", "1")
        from bot.app import ClaudeBot  # only when the bot is on: PTB takes a while to import

        bot = ClaudeBot(settings, app[ENGINE])
        app[BOT] = bot
        await bot.start()
        yield
        await bot.stop()

    async def stop_turns(app: web.Application) -> None:
        if BOT in app:
            await app[BOT].stop_polling()
        await app[ENGINE].shut_down()

    app.cleanup_ctx.insert(0, engine_context)  # first in, last out: every face runs inside the engine's lifetime
    if settings.telegram_bot_token is not None:
        app.cleanup_ctx.append(bot_context)
    app.on_shutdown.insert(0, stop_turns)  # before the faces' own shutdown work
    return app


def _raise_open_file_limit() -> None:
    """As many open files as the system lets us: every client connection and every CLI's pipes take some, and
    running out stops the daemon accepting connections at all."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(settings: Settings) -> int:
    """Run the daemon until SIGTERM or SIGINT; the exit status."""
    problems = [c for c in await run_checks(settings) if not c.ok and c.fatal]
    if problems:
        for check in problems:
            print(f"claude-max: cannot start: {check.name}: {check.detail}", file=sys.stderr)
            if check.fix:
                print(f"  fix: {check.fix}", file=sys.stderr)
        return 2
    _raise_open_file_limit()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = compose(settings)
    runner = app_runner(app)
    try:
        await runner.setup()
    except (StoreError, AlreadyRunning) as exc:
        print(f"claude-max: {exc}", file=sys.stderr)
        return 1
    site = GuardedSite(runner, settings.proxy_host, settings.proxy_port)
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
    engine = app[ENGINE]
    log.info("draining running_turns=%s grace_s=%s", engine.running, settings.shutdown_grace)
    drain = asyncio.create_task(engine.drain(settings.shutdown_grace))  # new turns are refused from now on
    second = asyncio.create_task(stop.wait())
    if BOT in app:  # no new chat messages either; a Bot API out of reach cannot hold this up for long
        polling = asyncio.create_task(app[BOT].stop_polling())
        await asyncio.wait([polling, second], return_when=asyncio.FIRST_COMPLETED)
    await asyncio.wait([drain, second], return_when=asyncio.FIRST_COMPLETED)
    drain.cancel()
    second.cancel()
    log.info("shutting_down running_turns=%s", engine.running)
    await runner.cleanup()
    log.info("stopped")
    return 0
