"""A person approves what Claude Code does: the real CLI asks, the fake Telegram shows it, a button answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import openai

from claude_max.daemon import BOT
from tests.conftest import TELEGRAM_USER as USER
from tests.conftest import Daemon
from tests.fake_telegram import FakeTelegram, SentMessage
from tests.mock_anthropic import MockAnthropic, last_tool_result

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


async def toasted(telegram: FakeTelegram, text: str) -> None:
    """Wait for a press to be answered with this short notice."""
    await telegram.wait_for(
        lambda: any(c.params.get("text") == text for c in telegram.calls_of("answerCallbackQuery")), within=10
    )


def created(daemon: Daemon) -> Path:
    return daemon.settings.workdir / "mock_created.txt"


async def ask_bot(start_bot: Callable[..., object], **overrides: object) -> Daemon:
    return await start_bot(telegram_permission_mode="ask", **overrides)  # type: ignore[no-any-return, operator]


async def asked_to_touch(
    start_bot: Callable[..., object], telegram: FakeTelegram, **overrides: object
) -> tuple[Daemon, SentMessage]:
    """A bot in `ask` mode, a request that runs a command needing approval, and the prompt it shows."""
    daemon = await ask_bot(start_bot, **overrides)
    telegram.user_sends("TOUCH_TOOL please")
    return daemon, await wait_prompt(telegram)


async def test_allow_runs_the_command_and_the_prompt_says_who_allowed_it(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon, prompt = await asked_to_touch(start_bot, telegram)
    assert "touch mock_created.txt" in prompt.text and "Run this command" in prompt.text
    await telegram.wait_for(lambda: any("waiting for approval" in m.text for m in telegram.sent_to(USER)), within=10)
    assert not created(daemon).exists(), "nothing ran before the press"
    telegram.user_presses(prompt, button(prompt, "Allow"))
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert created(daemon).exists()
    assert prompt.text.endswith("✅ Allowed by User.") and prompt.reply_markup is None
    await telegram.wait_for(lambda: any("\n\n✅ Done · " in t for t in telegram.texts_to(USER)))
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/metrics") as response:
        metrics = await response.text()
    assert 'claude_max_permission_prompts_total{decision="allow",face="telegram"} 1.0' in metrics


async def test_deny_reaches_claude_and_nothing_runs(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    daemon, prompt = await asked_to_touch(start_bot, telegram)
    telegram.user_presses(prompt, button(prompt, "Deny"))
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    said = tool_said(telegram)[0]
    assert "Denied by User" in said, said
    assert not created(daemon).exists()
    assert prompt.text.endswith("❌ Denied by User.")
    # The turn's summary says what was refused, not a plain "Done".
    await telegram.wait_for(lambda: any("\n\n✅ Done · " in t for t in telegram.texts_to(USER)))
    summary = next(t for t in telegram.texts_to(USER) if "\n\n✅ Done · " in t).split("\n\n✅ Done · ")[1]
    line, *log = summary.splitlines()
    assert "🚫 refused: 💻 Bash: touch mock_created.txt" in line and "tool" not in line, summary
    assert log == ["🚫 💻 Bash: touch mock_created.txt (refused)"], log


async def test_no_answer_in_time_is_a_denial_and_the_chat_is_told(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon, prompt = await asked_to_touch(start_bot, telegram, approval_timeout=2)
    await telegram.wait_for(lambda: "⏱ Denied: Nobody approved this within 2 seconds" in prompt.text, within=15)
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert "Nobody approved this within 2 seconds" in tool_said(telegram)[0]
    assert not created(daemon).exists()
    # Said once on the prompt, and in the turn's summary: no third message about it.
    await telegram.wait_for(lambda: any("🚫 refused: 💻 Bash: touch" in t for t in telegram.texts_to(USER)))
    assert not any("Nobody answered" in t for t in telegram.texts_to(USER))


async def test_always_allow_stops_the_cli_asking_for_the_same_command(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon, prompt = await asked_to_touch(start_bot, telegram)
    telegram.user_presses(prompt, button(prompt, "Always allow"))
    await telegram.wait_for(lambda: len(tool_said(telegram)) == 1, within=30)
    created(daemon).unlink()
    telegram.user_sends("TOUCH_TOOL again")
    await telegram.wait_for(lambda: len(tool_said(telegram)) == 2, within=30)
    assert len(prompts(telegram)) == 1, "the second identical command ran unasked"
    assert created(daemon).exists()


async def test_stop_while_a_prompt_waits_withdraws_it(start_bot: Callable[..., object], telegram: FakeTelegram) -> None:
    daemon, prompt = await asked_to_touch(start_bot, telegram)
    await telegram.wait_for(lambda: any("waiting for approval" in m.text for m in telegram.sent_to(USER)), within=10)
    telegram.user_sends("yes go ahead")  # typed, not pressed: queued, with a word on the buttons
    await telegram.wait_for(lambda: any("answer it with its buttons" in t for t in telegram.texts_to(USER)))
    telegram.user_sends("/stop")
    await telegram.wait_for(lambda: any("⏹ Stopped here · " in t for t in telegram.texts_to(USER)), within=20)
    await telegram.wait_for(lambda: "⏹ Withdrawn" in prompt.text, within=10)
    summary = next(t for t in telegram.texts_to(USER) if "⏹ Stopped here · " in t).split("⏹ Stopped here · ")[1]
    assert "🚫 refused: 💻 Bash: touch mock_created.txt" in summary and "tool (" not in summary, summary
    assert prompt.reply_markup is None and not created(daemon).exists()
    telegram.user_presses(prompt, "perm:" + button_id(prompt.text, telegram) + ":a")
    await toasted(telegram, "This prompt is no longer waiting.")
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
    daemon, prompt = await asked_to_touch(start_bot, telegram)
    telegram.user_presses(prompt, button(prompt, "Allow"), user_id=999)
    await toasted(telegram, "Not allowed.")
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


async def test_a_prompt_of_an_earlier_run_does_not_answer_a_new_one(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    first, old = await asked_to_touch(start_bot, telegram)
    old_allow = button(old, "Allow")
    telegram.user_sends("and then this")  # queued behind the waiting prompt
    await telegram.wait_for(lambda: any("📥 Queued" in t for t in telegram.texts_to(USER)))
    await first.app[BOT].stop()
    assert "📥 1 queued message did not run: the daemon is shutting down. Send that message again once it is back." in (
        telegram.texts_to(USER)
    ), "a shutdown does not drop the queue silently"
    await first.engine.close()
    # The shutdown withdrew the call: it is named refused, not counted as run.
    (ended,) = [t for t in telegram.texts_to(USER) if "⏹ Stopped: the daemon is shutting down" in t]
    summary = ended.split("⏹ Stopped · ")[1]
    assert "🚫 refused: 💻 Bash: touch mock_created.txt" in summary and "tool (" not in summary, summary
    second = await ask_bot(start_bot)
    telegram.user_sends("TOUCH_TOOL again")
    new = await wait_prompt(telegram, count=2)
    telegram.user_presses(old, old_allow)  # the button of the prompt the restart ended
    await toasted(telegram, "This prompt is no longer waiting.")
    assert not created(second).exists() and new.reply_markup is not None, "the new prompt still waits"
    telegram.user_presses(new, button(new, "Deny"))
    await telegram.wait_for(lambda: new.text.endswith("❌ Denied by User."), within=10)


def shown(telegram: FakeTelegram, head: str) -> list[SentMessage]:
    return [m for m in telegram.sent_to(USER) if m.text.startswith(head)]


async def wait_shown(telegram: FakeTelegram, head: str) -> SentMessage:
    await telegram.wait_for(lambda: shown(telegram, head), within=30)
    return shown(telegram, head)[0]


QUESTION = "❓ Claude asks"
PLAN = "📋 Claude's plan"


async def test_a_question_of_claude_is_answered_with_a_button(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    await ask_bot(start_bot)
    telegram.user_sends("ASK_QUESTION please")
    question = await wait_shown(telegram, QUESTION)
    assert "Which color should the button be?" in question.text and "• Blue: cool" in question.text
    blue = button(question, "Blue")
    telegram.user_presses(question, blue.rsplit(":", 1)[0] + ":o99")  # an option that is not there
    await toasted(telegram, "This button is not understood.")
    assert question.reply_markup is not None, "still asking"
    telegram.user_presses(question, blue)
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    said = tool_said(telegram)[0]
    assert '"Which color should the button be?"="Blue"' in said, "Claude read the choice"
    assert question.text.endswith("✅ Which color should the button be?: Blue\n(answered by User)")
    assert question.reply_markup is None


async def test_a_typed_answer_to_a_question_reaches_claude_and_starts_no_turn(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    await ask_bot(start_bot)
    telegram.user_sends("ASK_QUESTION please")
    question = await wait_shown(telegram, QUESTION)
    telegram.user_presses(question, button(question, "Other"))
    await telegram.wait_for(lambda: any("Send your answer" in t for t in telegram.texts_to(USER)))
    telegram.user_sends("Green with <b>stripes</b>")
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert '="Green with <b>stripes</b>"' in str(last_tool_result(mock_api.requests[-1])), "Claude read it as typed"
    assert not any("MOCK reply to: Green" in t for t in telegram.texts_to(USER)), "the answer was no new message"


async def test_deny_with_a_reason_tells_claude_why(start_bot: Callable[..., object], telegram: FakeTelegram) -> None:
    daemon, prompt = await asked_to_touch(start_bot, telegram)
    telegram.user_presses(prompt, button(prompt, "Deny with a reason"))
    await telegram.wait_for(lambda: any("Send why" in t for t in telegram.texts_to(USER)))
    telegram.user_sends("not on this machine, use the sandbox")
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert "not on this machine, use the sandbox" in tool_said(telegram)[0], "Claude read the reason"
    assert prompt.text.endswith("❌ Denied by User: not on this machine, use the sandbox")
    assert not created(daemon).exists()


async def plan_shown(start_bot: Callable[..., object], telegram: FakeTelegram) -> SentMessage:
    """A chat in plan mode, a request Claude plans, and the plan it shows for approval."""
    await ask_bot(start_bot)
    telegram.user_sends("/mode plan")
    await telegram.wait_for(lambda: any(t.startswith("Mode set to plan") for t in telegram.texts_to(USER)))
    telegram.user_sends("PLAN_EXIT please")
    plan = await wait_shown(telegram, PLAN)
    return plan


async def test_an_approved_plan_lets_the_turn_go_on_and_the_next_turn_plans_again(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    plan = await plan_shown(start_bot, telegram)
    assert "The plan" in plan.text and "Fix the bug" in plan.text and "**" not in plan.text, "rendered Markdown"
    telegram.user_presses(plan, button(plan, "Approve"))
    await toasted(telegram, "Approved")  # (as the plan then says)
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert "User has approved your plan" in tool_said(telegram)[0]
    assert plan.text.endswith("✅ Approved by User.") and plan.reply_markup is None
    telegram.user_sends("and now the next step")
    await telegram.wait_for(lambda: any("MOCK reply to: and now" in t for t in telegram.texts_to(USER)), within=30)
    newest = json.dumps(mock_api.requests[-1]["messages"][-1])
    assert "Plan mode is active" in newest, "the chat's mode holds for its next turn"


async def test_keep_planning_keeps_claude_in_plan_mode(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    plan = await plan_shown(start_bot, telegram)
    telegram.user_presses(plan, button(plan, "Keep planning"))
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert "User wants to keep planning" in tool_said(telegram)[0]
    assert plan.text.endswith("✏️ User asked to keep planning.")
    assert "refused" not in tool_said(telegram)[0], "an answer to Claude, not a refused tool"


async def test_a_skipped_question_is_an_answer_not_a_refusal(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    await ask_bot(start_bot)
    telegram.user_sends("ASK_QUESTION please")
    question = await wait_shown(telegram, QUESTION)
    telegram.user_presses(question, button(question, "Skip"))
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert "User skipped the question" in tool_said(telegram)[0]
    assert "✅ Done · " in tool_said(telegram)[0] and "refused" not in tool_said(telegram)[0], tool_said(telegram)[0]


async def test_a_deleted_prompt_times_out_as_a_denial_and_the_turn_ends(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon, prompt = await asked_to_touch(start_bot, telegram, approval_timeout=2)
    telegram.user_deletes(prompt)
    await telegram.wait_for(lambda: any("🚫 refused: 💻 Bash: touch" in t for t in telegram.texts_to(USER)), within=30)
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert "Nobody approved this within 2 seconds" in tool_said(telegram)[0] and not created(daemon).exists()
    telegram.user_sends("hello after")
    await telegram.wait_for(lambda: any("MOCK reply to: hello after" in t for t in telegram.texts_to(USER)), within=30)
