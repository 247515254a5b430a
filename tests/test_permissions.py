"""A person approves what Claude Code does: the real CLI asks, the fake Telegram shows it, a button answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import openai

from tests.conftest import TELEGRAM_USER as USER
from tests.conftest import Daemon
from tests.fake_telegram import FakeTelegram, SentMessage
from tests.mock_anthropic import MockAnthropic

NOTIFY = 555


def prompts(telegram: FakeTelegram, chat: int = USER) -> list[SentMessage]:
    return [m for m in telegram.sent_to(chat) if m.text.startswith("🔐 Claude Code asks")]


async def wait_prompt(telegram: FakeTelegram, count: int = 1, chat: int = USER) -> SentMessage:
    await telegram.wait_for(lambda: len(prompts(telegram, chat)) >= count, within=30)
    return prompts(telegram, chat)[count - 1]


def tool_said(telegram: FakeTelegram) -> list[str]:
    """The answers that report what the tool returned (the mock's words after a tool result)."""
    return [t for t in telegram.texts_to(USER) if "Tool said" in t]


def button(message: SentMessage, label: str) -> str:
    assert message.reply_markup is not None, "the prompt has its buttons"
    for row in message.reply_markup["inline_keyboard"]:
        for key in row:
            if label in key["text"]:
                return str(key["callback_data"])
    raise AssertionError(f"no {label!r} button in {message.reply_markup}")


def created(daemon: Daemon) -> Path:
    return daemon.settings.workdir / "mock_created.txt"


async def ask_bot(start_bot: Callable[..., object], **overrides: object) -> Daemon:
    return await start_bot(telegram_permission_mode="ask", **overrides)  # type: ignore[no-any-return, operator]


async def test_allow_runs_the_command_and_the_prompt_says_who_allowed_it(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon = await ask_bot(start_bot)
    telegram.user_sends("TOUCH_TOOL please")
    prompt = await wait_prompt(telegram)
    assert "touch mock_created.txt" in prompt.text and "Run this command" in prompt.text
    await telegram.wait_for(lambda: any("waiting for approval" in m.text for m in telegram.sent_to(USER)), within=10)
    assert not created(daemon).exists(), "nothing ran before the press"
    telegram.user_presses(prompt, button(prompt, "Allow"))
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert created(daemon).exists()
    assert prompt.text.endswith("✅ Allowed by User.") and prompt.reply_markup is None
    await telegram.wait_for(lambda: any(t.startswith("✅ Done") for t in telegram.texts_to(USER)))
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/metrics") as response:
        metrics = await response.text()
    assert 'claude_max_permission_prompts_total{decision="allow",face="telegram"} 1.0' in metrics


async def test_deny_reaches_claude_and_nothing_runs(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    daemon = await ask_bot(start_bot)
    telegram.user_sends("TOUCH_TOOL please")
    prompt = await wait_prompt(telegram)
    telegram.user_presses(prompt, button(prompt, "Deny"))
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    said = tool_said(telegram)[0]
    assert "Denied by User" in said, said
    assert not created(daemon).exists()
    assert prompt.text.endswith("❌ Denied by User.")


async def test_no_answer_in_time_is_a_denial_and_the_chat_is_told(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon = await ask_bot(start_bot, approval_timeout=2)
    telegram.user_sends("TOUCH_TOOL please")
    prompt = await wait_prompt(telegram)
    await telegram.wait_for(lambda: any("Nobody answered the prompt" in t for t in telegram.texts_to(USER)), within=15)
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert "Nobody approved this within 2 seconds" in tool_said(telegram)[0]
    assert not created(daemon).exists() and "⏱ Denied" in prompt.text


async def test_always_allow_stops_the_cli_asking_for_the_same_command(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon = await ask_bot(start_bot)
    telegram.user_sends("TOUCH_TOOL please")
    prompt = await wait_prompt(telegram)
    telegram.user_presses(prompt, button(prompt, "Always allow"))
    await telegram.wait_for(lambda: len(tool_said(telegram)) == 1, within=30)
    created(daemon).unlink()
    telegram.user_sends("TOUCH_TOOL again")
    await telegram.wait_for(lambda: len(tool_said(telegram)) == 2, within=30)
    assert len(prompts(telegram)) == 1, "the second identical command ran unasked"
    assert created(daemon).exists()


async def test_stop_while_a_prompt_waits_withdraws_it(start_bot: Callable[..., object], telegram: FakeTelegram) -> None:
    daemon = await ask_bot(start_bot)
    telegram.user_sends("TOUCH_TOOL please")
    prompt = await wait_prompt(telegram)
    telegram.user_sends("/stop")
    await telegram.wait_for(lambda: any(t.startswith("⏹ Stopped.") for t in telegram.texts_to(USER)), within=20)
    await telegram.wait_for(lambda: "⏹ Withdrawn" in prompt.text, within=10)
    assert prompt.reply_markup is None and not created(daemon).exists()
    telegram.user_presses(prompt, "perm:" + button_id(prompt.text, telegram) + ":a")
    await telegram.wait_for(lambda: any(c.params.get("text") == "This prompt is no longer waiting."
                                        for c in telegram.calls_of("answerCallbackQuery")), within=10)  # fmt: skip
    assert await daemon.wait_no_strays(within=5) == []


def button_id(text: str, telegram: FakeTelegram) -> str:
    """The id the prompt's buttons carried (read from the first sendMessage that had them)."""
    for call in telegram.calls_of("sendMessage"):
        markup = call.params.get("reply_markup")
        if markup and call.params.get("text") and str(call.params["text"]).startswith("🔐"):
            data = markup["inline_keyboard"][0][0]["callback_data"] if isinstance(markup, dict) else ""
            return str(data).split(":")[1]
    raise AssertionError("no prompt was sent")


async def test_a_stranger_cannot_answer_a_prompt(start_bot: Callable[..., object], telegram: FakeTelegram) -> None:
    daemon = await ask_bot(start_bot)
    telegram.user_sends("TOUCH_TOOL please")
    prompt = await wait_prompt(telegram)
    telegram.user_presses(prompt, button(prompt, "Allow"), user_id=999)
    await telegram.wait_for(
        lambda: any(c.params.get("text") == "Not allowed." for c in telegram.calls_of("answerCallbackQuery"))
    )
    assert not created(daemon).exists() and prompt.reply_markup is not None, "still waiting for the owner"
    telegram.user_presses(prompt, "perm:nonsense")
    telegram.user_presses(prompt, button(prompt, "Deny"))
    await telegram.wait_for(lambda: prompt.text.endswith("❌ Denied by User."), within=10)


async def test_an_http_turn_is_approved_from_the_notify_chat(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon = await start_bot(proxy_permission_mode="ask", telegram_notify_id=str(NOTIFY))  # type: ignore[operator]
    client = daemon.client()

    async def press_when_asked() -> None:
        prompt = await wait_prompt(telegram, chat=NOTIFY)
        assert "From an HTTP client" in prompt.text
        telegram.user_presses(prompt, button(prompt, "Allow"))

    import asyncio

    presser = asyncio.create_task(press_when_asked())
    answer = await client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "TOUCH_TOOL over http"}]
    )
    await presser
    assert "Tool said" in (answer.choices[0].message.content or "") and created(daemon).exists()


async def test_an_http_turn_with_no_notify_chat_is_denied_at_once(
    start_daemon: Callable[..., object],
) -> None:
    daemon: Daemon = await start_daemon(proxy_permission_mode="ask")  # type: ignore[assignment]
    answer = await daemon.client().chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "TOUCH_TOOL over http"}], timeout=60
    )
    text = answer.choices[0].message.content or ""
    assert "Tool said" in text and "Nobody can approve this here" in text, text
    assert not created(daemon).exists()
    _ = openai  # the client comes from the daemon fixture


async def test_mode_shows_and_sets_the_chats_mode(start_bot: Callable[..., object], telegram: FakeTelegram) -> None:
    daemon = await ask_bot(start_bot)
    telegram.user_sends("/mode")
    await telegram.wait_for(lambda: any(t.startswith("Mode: ask") for t in telegram.texts_to(USER)))
    telegram.user_sends("/mode yolo")
    await telegram.wait_for(lambda: any(t.startswith("⚠️ Unknown mode 'yolo'") for t in telegram.texts_to(USER)))
    telegram.user_sends("/mode bypass")
    await telegram.wait_for(lambda: any(t.startswith("Mode set to bypass") for t in telegram.texts_to(USER)))
    telegram.user_sends("TOUCH_TOOL please")
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert prompts(telegram) == [] and created(daemon).exists(), "bypass: nothing was asked"
    telegram.user_sends("/status")
    await telegram.wait_for(lambda: any("Mode: bypass" in t for t in telegram.texts_to(USER)))
