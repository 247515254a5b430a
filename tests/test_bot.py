"""The Telegram bot end to end: the daemon with the bot, a fake Bot API server, the real CLI."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.files_back import NOTE as FILES_NOTE
from claude_max.daemon import BOT
from tests.conftest import Daemon, empty_env, processes_marked, running_commands, wait_no_processes
from tests.fake_telegram import TOKEN, FakeTelegram, Fault, SentMessage
from tests.mock_anthropic import MockAnthropic, newest_user_text

USER = 111
STRANGER = 999
GROUP = -1005551234  # a group: no drafts there
TINY_JPEG = base64.b64decode(  # a real 1x1 JPEG: the CLI reads its dimensions before passing it on
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////"
    "////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA="
)
STATUS_PREFIXES = ("⏳", "✅", "⏹ Stopped ·", "⏹ Stopped here ·", "⏱ Timed out", "⛔ Not run ·", "⚠️ Failed")


@pytest.fixture
async def bot(start_bot: Callable[..., object]) -> Daemon:
    return await start_bot()  # type: ignore[misc]


def is_status(text: str) -> bool:
    return text.startswith(STATUS_PREFIXES)


def split_footer(text: str) -> tuple[str, str]:
    """A message as (what it says, the turn's summary at its end with the tool log, or "")."""
    if is_status(text):
        return "", text
    at = len(text)
    while (at := text.rfind("\n\n", 0, at)) >= 0:
        if is_status(text[at + 2 :]):
            return text[:at], text[at + 2 :]
    return text, ""


def answers(telegram: FakeTelegram, chat: int = USER) -> list[str]:
    """What the chat was told, without the turns' summaries."""
    return [body for t in telegram.texts_to(chat) if (body := split_footer(t)[0])]


def summaries(telegram: FakeTelegram, chat: int = USER) -> list[str]:
    """Each finished turn's summary (below its answer, or in the status message), with its tool log."""
    return [footer for t in telegram.texts_to(chat) if (footer := split_footer(t)[1]) and not footer.startswith("⏳")]


def status_messages(telegram: FakeTelegram, chat: int = USER, *, gone: bool = False) -> list[SentMessage]:
    """The chat's status messages; with `gone`, also those deleted when their turn's answer came."""
    shown = telegram.messages.values() if gone else telegram.sent_to(chat)
    return [m for m in shown if m.chat_id == chat and is_status(m.text) and (gone or not m.deleted)]


async def wait_answer(telegram: FakeTelegram, text: str, chat: int = USER, within: float = 30) -> None:
    await telegram.wait_for(lambda: any(text in t for t in answers(telegram, chat)), within)


async def wait_idle(daemon: Daemon, telegram: FakeTelegram) -> None:
    """Until no turn runs and every status message has its final summary."""
    await telegram.wait_for(
        lambda: (
            not any(c.busy for c in daemon.app[BOT].chats.values())
            and not any(m.text.startswith("⏳") for m in status_messages(telegram))
        )
    )


# -- a conversation ----------------------------------------------------------------------------


async def test_multi_turn_conversation_with_live_progress(
    bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    commands = telegram.calls_of("setMyCommands")
    assert [c["command"] for c in commands[0].params["commands"]] == [
        "new",
        "stop",
        "status",
        "model",
        "mode",
        "project",
        "resume",
        "help",
        "start",
    ]

    telegram.user_sends("my name is Ada")
    await wait_answer(telegram, "MOCK reply to: my name is Ada")
    telegram.user_sends("SLOW_TOOL and tell me my name")
    await wait_answer(telegram, "Tool said: hi")
    await wait_idle(bot, telegram)
    # The second turn resumed the first one's session.
    assert any(role == "user" and text.endswith("my name is Ada") for role, text in mock_api.dialogue())

    # Each turn ends as one message, read top to bottom: the answer, its summary, the tools it ran collapsed.
    final = next(m for m in telegram.sent_to(USER) if "Tool said: hi" in m.text)
    body, footer = split_footer(final.text)
    assert body.endswith("Tool said: hi") and footer.startswith("✅ Done") and "1 tool (Bash)" in footer
    [log] = [e for e in final.entities if e["type"] == "expandable_blockquote"]
    assert final.text.encode("utf-16-le")[2 * log["offset"] :].decode("utf-16-le").startswith("💻 Bash: python3 -c")
    assert [split_footer(t)[1].split(" · ")[0] for t in telegram.texts_to(USER)] == ["✅ Done", "✅ Done"]
    statuses = status_messages(telegram, gone=True)
    assert len(statuses) == 2 and all(m.deleted for m in statuses), "the status messages went with the answers"
    tool_status = statuses[1]
    first_send = [c for c in telegram.calls_of("sendMessage") if c.params.get("reply_markup")][1]
    assert first_send.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "stop"
    edits = [c for c in telegram.calls_of("editMessageText") if int(c.params["message_id"]) == tool_status.message_id]
    assert any("💻 Bash: python3 -c" in c.params["text"] for c in edits), "the running tool was shown"
    assert telegram.calls_of("sendChatAction"), "a typing indicator was shown"
    assert all(c.status == 200 for c in telegram.calls), [c.description for c in telegram.calls if c.status != 200]


async def test_strangers_get_their_id_once_and_nothing_else(
    bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    telegram.user_sends("hello, run rm -rf /", user_id=STRANGER)
    telegram.user_sends("/new", user_id=STRANGER)
    telegram.user_sends("/status", user_id=STRANGER)
    await telegram.wait_for(lambda: telegram.texts_to(STRANGER))
    await asyncio.sleep(0.5)
    replies = telegram.texts_to(STRANGER)
    assert len(replies) == 1
    assert str(STRANGER) in replies[0] and "TELEGRAM_ALLOWED_USERS" in replies[0]
    assert mock_api.requests == [] and processes_marked(bot.mark) == []
    assert STRANGER not in bot.app[BOT].chats
    rows = await (await bot.engine.store.db.execute("SELECT COUNT(*) FROM conversations")).fetchone()
    assert rows[0] == 0


async def test_empty_allowlist_serves_nobody(start_bot: Callable[..., object], telegram: FakeTelegram) -> None:
    await start_bot(telegram_allowed_users="")
    telegram.user_sends("hi")
    await telegram.wait_for(lambda: telegram.texts_to(USER))
    assert f"Your Telegram user id is {USER}" in telegram.texts_to(USER)[0]


async def test_sticker_and_unknown_command(bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic) -> None:
    telegram.user_sends_sticker()
    telegram.user_sends("/frobnicate")
    await telegram.wait_for(lambda: len(telegram.texts_to(USER)) == 2)
    assert sorted(telegram.texts_to(USER)) == sorted(
        ["I can read text, photos, documents and voice messages.", "Unknown command. /help lists what I understand."]
    )
    assert mock_api.requests == []


async def test_commands_for_other_bots_are_left_alone(
    bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    telegram.user_sends("/status@other_bot")  # in a private chat too: it was not for this bot
    telegram.user_sends("/status@Claude_Max_Test_Bot", chat_id=GROUP)  # this bot's, in any letter case
    await telegram.wait_for(lambda: any("\nMode: " in t for t in telegram.texts_to(GROUP)))
    telegram.user_sends("/deploy", chat_id=GROUP)  # a group's other bots may know it
    telegram.user_sends("/deploy@claude_max_test_bot", chat_id=GROUP)  # addressed to this bot: answered
    await telegram.wait_for(lambda: any("Unknown command" in t for t in telegram.texts_to(GROUP)))
    telegram.user_sends("/deploy")
    await telegram.wait_for(lambda: any("Unknown command" in t for t in telegram.texts_to(USER)))
    assert telegram.texts_to(USER) == ["Unknown command. /help lists what I understand."]
    assert sum("Unknown command" in t for t in telegram.texts_to(GROUP)) == 1
    assert mock_api.requests == []


async def test_an_empty_looking_message_is_said_and_a_forwarded_one_is_marked(
    bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    telegram.user_sends("\u200b\u200b \u2060")
    await telegram.wait_for(lambda: telegram.texts_to(USER))
    assert telegram.texts_to(USER) == ["That message looks empty to me: nothing was sent to Claude."]
    assert mock_api.requests == []
    telegram.user_sends("the build is red again", forwarded_from="Ada")
    await wait_answer(telegram, "MOCK reply to: ")
    said = json.dumps("[Forwarded from Ada]\n\nthe build is red again")[1:-1]
    assert any(said in json.dumps(r.get("messages")) for r in mock_api.requests), "Claude knows whose words they are"


async def test_a_4096_character_message(bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic) -> None:
    long_text = ("word " * 820)[:4095] + "Z"
    telegram.user_sends(long_text)
    await wait_answer(telegram, "MOCK reply to:")
    assert mock_api.user_texts()[-1] == long_text


async def test_a_paste_telegram_split_into_messages_is_one_turn(
    bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    first = ("a line of a long log\n" * 200)[:4096]  # cut at the limit, in the middle of a line
    second = "g\n" + "the log goes on\n" * 200  # (Telegram's apps send the rest at once)
    third = "and ends here"  # cut before at a line break the app dropped
    for part in (first, second.rstrip("\n"), third):
        telegram.user_sends(part)
    await wait_answer(telegram, "MOCK reply to:")
    await wait_idle(bot, telegram)
    assert mock_api.user_texts()[-1] == first + second.rstrip("\n") + "\n" + third
    assert len(answers(telegram)) == 1 and not any("Queued" in t for t in telegram.texts_to(USER)), "one turn"
    telegram.user_sends("a short one")  # a short message is not held for more
    telegram.user_sends("and another")
    await telegram.wait_for(lambda: len(answers(telegram)) == 3, within=30)


async def test_an_edit_reaches_claude_while_the_message_waits_and_is_answered_after(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    from tests.test_permissions import button, wait_prompt

    await start_bot(telegram_permission_mode="ask")  # type: ignore[operator]
    telegram.user_sends("TOUCH_TOOL first")
    prompt = await wait_prompt(telegram)  # (it holds the turn)
    typo = telegram.user_sends("what is teh time")
    await telegram.wait_for(lambda: any("📥 Queued" in t for t in telegram.texts_to(USER)))
    telegram.user_edits(typo, "what is the time")
    await telegram.wait_for(lambda: any("the new text is what it reads" in t for t in telegram.texts_to(USER)))
    telegram.user_presses(prompt, button(prompt, "Deny"))
    await wait_answer(telegram, "MOCK reply to: what is the time")
    telegram.user_edits(typo, "what was the time")  # read already: said, not run again
    await telegram.wait_for(lambda: any("the edit does not reach it" in t for t in telegram.texts_to(USER)))
    assert not any("teh" in json.dumps(r.get("messages")) for r in mock_api.requests)


async def test_long_markdown_answer_is_split_cleanly(bot: Daemon, telegram: FakeTelegram) -> None:
    telegram.user_sends("MARKDOWN please")
    await wait_answer(telegram, "stray")
    await wait_idle(bot, telegram)
    parts = [m for m in telegram.sent_to(USER) if not is_status(m.text)]
    assert len(parts) >= 5
    assert all(len(m.text) <= 4096 for m in parts)
    joined = "\n".join(m.text for m in parts)
    for section in range(14):
        assert f"def section_{section}():" in joined
        assert joined.count(f"value_{section}_24 = compute(24)") == 1, "nothing lost or repeated"
    # Each code block sits whole in one message, as one `pre` entity.
    pre = [e for m in parts for e in m.entities if e["type"] == "pre"]
    assert len(pre) == 14
    assert "*unclosed emphasis" in joined or "unclosed emphasis" in joined
    assert "☐ an open task\n☑ a finished task" in joined, "an open task is an empty box, a finished one ticked"
    assert "<div> and Vec<T>" in joined and "<details>\nsummary\n</details>" in joined, "HTML is shown as written"
    assert all(c.status == 200 for c in telegram.calls_of("sendMessage"))


# -- queueing and stopping ---------------------------------------------------------------------


async def test_burst_while_a_turn_runs_is_queued_in_order(
    bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    telegram.user_sends("first LONG40 SLOW")
    await telegram.wait_for(lambda: mock_api.requests)
    for i in range(5):
        telegram.user_sends(f"burst {i}")
    await wait_answer(telegram, "MOCK reply to: burst 4", within=60)
    await wait_idle(bot, telegram)
    order = [t for t in answers(telegram) if t.startswith(("w0", "MOCK reply to: burst"))]
    assert order == ["".join(f"w{i} " for i in range(40)).strip()] + [f"MOCK reply to: burst {i}" for i in range(5)]
    queued_notes = [t for t in answers(telegram) if t.startswith("📥 Queued")]
    assert len(queued_notes) == 1, "told once, not five times"
    assert mock_api.max_in_flight == 1


async def test_stop_kills_the_turn_and_the_session_stays_usable(
    bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    telegram.user_sends("/stop")
    await wait_answer(telegram, "Nothing is running.")
    telegram.user_sends("remember PELICAN")
    await wait_answer(telegram, "MOCK reply to: remember PELICAN")
    telegram.user_sends("SLEEP_TOOL now")
    await telegram.wait_for(lambda: any("💻 Bash" in m.text for m in status_messages(telegram)), within=20)
    started = asyncio.get_running_loop().time()
    telegram.user_sends("/stop")
    telegram.user_sends("/stop")
    # What Claude had written stays, and its summary says it stopped there; the stop is said once besides.
    await telegram.wait_for(lambda: any(t.startswith("I will run a command.\n\n⏹ Stopped here · ")
                                         for t in telegram.texts_to(USER)), within=20)  # fmt: skip
    await telegram.wait_for(lambda: not running_commands(bot.mark, b"time.sleep"), within=5)
    assert asyncio.get_running_loop().time() - started < 6, "the tool's command was gone within seconds"
    assert await bot.wait_no_strays(within=5) == []
    await wait_answer(telegram, "Already stopping.")
    assert "⏹ Stopping. The conversation is kept: send a message to go on." in answers(telegram)
    await wait_idle(bot, telegram)
    assert summaries(telegram)[-1].startswith("⏹ Stopped here · ")
    # "Stopping" (with what it keeps), "Already stopping" and the kept text's summary: nothing else.
    stop_words = [text for text in telegram.texts_to(USER) if "stopp" in text.lower()]
    assert len(stop_words) == 3, stop_words
    telegram.user_sends("what did I ask you to remember?")
    await wait_answer(telegram, "MOCK reply to: what did I ask you to remember?")
    assert any(text.endswith("remember PELICAN") for role, text in mock_api.dialogue() if role == "user")


@pytest.mark.parametrize("ending", ["stop", "timeout"])
async def test_a_first_turn_that_got_no_answer_keeps_what_the_user_said(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic, ending: str
) -> None:
    daemon: Daemon = await start_bot(activity_timeout=3)  # type: ignore[assignment]
    if ending == "stop":
        telegram.user_sends("SLEEP_TOOL my pet is called RHUBARB")
        await telegram.wait_for(lambda: any("💻 Bash" in m.text for m in status_messages(telegram)), within=20)
        telegram.user_sends("/stop")
        await wait_answer(telegram, "The conversation is kept")
        await telegram.wait_for(lambda: any("⏹ Stopped here · " in t for t in telegram.texts_to(USER)), within=20)
    else:
        telegram.user_sends("STALL my pet is called RHUBARB")
        await telegram.wait_for(lambda: any("⏱ Timed out · " in t for t in telegram.texts_to(USER)), within=30)
    await wait_idle(daemon, telegram)
    telegram.user_sends("/status")
    await telegram.wait_for(lambda: any("(0 answered turns here)" in t for t in telegram.texts_to(USER)))
    telegram.user_sends("what is my pet called?")
    await wait_answer(telegram, "MOCK reply to: what is my pet called?")
    said = [t for role, t in mock_api.dialogue() if role == "user"]
    assert any("my pet is called RHUBARB" in t for t in said), "the stopped first turn is in the session"


async def test_stop_button(bot: Daemon, telegram: FakeTelegram) -> None:
    telegram.user_sends("SLEEP_TOOL again")
    await telegram.wait_for(lambda: any("💻 Bash" in m.text for m in status_messages(telegram)), within=20)
    telegram.user_sends("queued behind it")
    await wait_answer(telegram, "📥 Queued")
    telegram.user_presses(status_messages(telegram)[-1], "stop")
    await telegram.wait_for(lambda: any("\n\n⏹ Stopped here · " in t for t in telegram.texts_to(USER)), within=20)
    answered = telegram.calls_of("answerCallbackQuery")
    assert answered and answered[0].params.get("text") == "Stopping… Dropped 1 queued message."
    await telegram.wait_for(lambda: not running_commands(bot.mark, b"time.sleep"), within=5)
    assert await bot.wait_no_strays(within=5) == []


async def test_new_starts_a_fresh_session(bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic) -> None:
    telegram.user_sends("/new")
    await wait_answer(telegram, "has no session yet")
    telegram.user_sends("old topic")
    await wait_answer(telegram, "MOCK reply to: old topic")
    telegram.user_sends("/new")
    await wait_answer(telegram, "Fresh session")
    telegram.user_sends("new topic")
    await wait_answer(telegram, "MOCK reply to: new topic")
    # Nothing of before: a new session's first message, with the line on files back the bot puts before it.
    assert [t for r, t in mock_api.dialogue() if r == "user"] == [f"{FILES_NOTE}\nnew topic"]
    # /new while a turn writes: what it wrote comes first, then the fresh session, and nothing says "kept".
    telegram.user_sends("LONG300 SLOW remember KIWI")
    await telegram.wait_for(
        lambda: any("w20 " in c.params.get("text", "") for c in telegram.calls_of("sendMessageDraft"))
    )
    telegram.user_sends("/new")
    await wait_answer(telegram, "⏹ Stopped the running turn. 🆕 Fresh session")
    texts = telegram.texts_to(USER)
    fresh = next(i for i, t in enumerate(texts) if t.startswith("⏹ Stopped the running turn."))
    assert texts[fresh - 1].startswith("w0 w1") and "\n\n⏹ Stopped here · " in texts[fresh - 1]
    assert not any("kept" in t for t in texts[fresh - 1 :])


async def test_model_and_status(bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic) -> None:
    telegram.user_sends("/model")
    await wait_answer(telegram, "Model: the CLI's default")
    offer = next(m for m in telegram.sent_to(USER) if m.text.startswith("Model: the CLI's default"))
    pressed = [b["callback_data"] for row in offer.reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    assert pressed == ["model:opus", "model:sonnet", "model:haiku", "model:default"]
    telegram.user_sends("/model gpt-9")
    await wait_answer(telegram, "Unknown model 'gpt-9'")
    telegram.user_presses(offer, "model:haiku")
    await wait_answer(telegram, "Model set to haiku")
    await telegram.wait_for(lambda: "✅ haiku" in json.dumps(offer.reply_markup, ensure_ascii=False))
    assert "✅ default" not in json.dumps(offer.reply_markup, ensure_ascii=False), "the listing ticks the new choice"
    assert offer.text.startswith("Model: haiku (this chat's choice)."), "and names it"
    telegram.user_sends("which model?")
    await wait_answer(telegram, "MOCK reply to: which model?")
    assert "haiku" in mock_api.requests[-1]["model"]
    await wait_idle(bot, telegram)
    telegram.user_sends("ERR400 fail once")
    await wait_answer(telegram, "The Anthropic API failed")
    await wait_idle(bot, telegram)
    telegram.user_sends("/status")
    await wait_answer(telegram, "Usage, all sessions here:")
    status = next(t for t in answers(telegram) if t.startswith("Session:"))
    record = await bot.engine.store.get(f"tg:{USER}")
    assert record is not None and record.session_id[:8] in status
    # The session's turns and the chat's turns are told apart, and so is the one that got no answer.
    assert "(1 answered turn here)" in status and "Usage, all sessions here: 2 turns (1 without an answer)," in status
    assert "Model: haiku (this chat's choice)\n" in status and "Running: nothing" in status
    telegram.user_presses(offer, "model:default")
    await wait_answer(telegram, "Model reset to the default (the CLI's default (last answer from")
    telegram.user_sends("LONG300 SLOW")
    await telegram.wait_for(
        lambda: any("w20 " in c.params.get("text", "") for c in telegram.calls_of("sendMessageDraft"))
    )
    telegram.user_sends("/status")
    await telegram.wait_for(lambda: any("s, now " in t for t in answers(telegram)))
    running = next(t for t in answers(telegram) if "s, now " in t)
    assert ", now writing the answer" in running, running
    assert "Model: the CLI's default (last answer from claude-haiku" in running, running


# -- failures ----------------------------------------------------------------------------------


async def test_flood_control_on_edits_and_on_the_answer(
    bot: Daemon, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    telegram.fail_next("editMessageText", Fault(429, "Too Many Requests: retry after 2", retry_after=2))
    telegram.user_sends("LONG60 SLOW")
    await telegram.wait_for(lambda: telegram.calls_of("editMessageText"))
    flooded_at = telegram.calls_of("editMessageText")[0].at
    telegram.fail_next("sendMessage", Fault(429, "Too Many Requests: retry after 2", retry_after=2))
    await wait_answer(telegram, "w59", within=30)
    edits = telegram.calls_of("editMessageText")
    assert all(not (flooded_at < c.at < flooded_at + 1.9) for c in edits[1:]), "edits paused for retry_after"
    sends = telegram.calls_of("sendMessage")
    flooded_send = next(c for c in sends if c.status == 429)
    delivered = next(c for c in sends if c.status == 200 and "w59" in c.params.get("text", ""))
    assert delivered.at - flooded_send.at >= 1.9, "the answer waited for retry_after, and was not lost"
    # Handled flood control is one info line per wait, not an error with a traceback.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert any("telegram_flood call=answer retry_after=2" in r.getMessage() for r in caplog.records)


async def test_edit_rate_and_no_identical_edits(bot: Daemon, telegram: FakeTelegram) -> None:
    telegram.user_sends("LONG80 SLOW")
    await wait_answer(telegram, "w79", within=30)
    await wait_idle(bot, telegram)
    status = status_messages(telegram, gone=True)[-1]
    edits = [c for c in telegram.calls_of("editMessageText") if int(c.params["message_id"]) == status.message_id]
    assert len(edits) >= 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert all(gap >= 0.45 for gap in gaps), gaps
    assert not [c for c in edits if c.status != 200], "never an edit Telegram refused (not modified, too long)"


async def test_telegram_errors_never_break_a_turn(bot: Daemon, telegram: FakeTelegram) -> None:
    telegram.user_sends("LONG30 SLOW")
    await telegram.wait_for(lambda: status_messages(telegram))
    status_messages(telegram)[0].deleted = True  # the user deleted the status message
    await wait_answer(telegram, "w29", within=30)
    telegram.fail_next("sendMessage", Fault(403, "Forbidden: bot was blocked by the user"), times=3)
    telegram.user_sends("blocked for a moment")
    await telegram.wait_for(lambda: len([c for c in telegram.calls_of("sendMessage") if c.status == 403]) == 3)
    telegram.user_sends("back again")
    await wait_answer(telegram, "MOCK reply to: back again")


async def test_a_status_message_that_cannot_be_deleted_becomes_the_summary(bot: Daemon, telegram: FakeTelegram) -> None:
    telegram.fail_next("deleteMessage", Fault(400, "Bad Request: message can't be deleted for everyone"))
    telegram.user_sends("USE_TOOL please")
    await wait_answer(telegram, "Tool said: hi")
    await wait_idle(bot, telegram)
    [status] = status_messages(telegram)
    assert status.text.startswith("✅ Done") and "1 tool (Bash)" in status.text and status.reply_markup is None
    assert summaries(telegram)[0].startswith("✅ Done"), "the answer has its summary too"


async def test_cli_hanging_alerts_the_chat(start_bot: Callable[..., object], telegram: FakeTelegram) -> None:
    daemon: Daemon = await start_bot(activity_timeout=2)  # type: ignore[assignment]
    telegram.user_sends("HANG")  # the API never answers: said so, not "last: started the session"
    await wait_answer(telegram, "the Anthropic API did not answer for 2s")
    alert = next(t for t in answers(telegram) if "did not answer" in t)
    assert "(Claude Code had started the session and waited)" in alert and "The conversation is kept" in alert
    await wait_idle(daemon, telegram)
    assert summaries(telegram)[-1].startswith("⏱ Timed out")
    assert await daemon.wait_no_strays() == []


async def test_a_stalled_answer_keeps_what_was_written(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    daemon: Daemon = await start_bot(activity_timeout=2)  # type: ignore[assignment]
    telegram.user_sends("STALL midway")
    await telegram.wait_for(lambda: any("\n\n⏱ Timed out · " in t for t in telegram.texts_to(USER)), within=30)
    (ended,) = [t for t in telegram.texts_to(USER) if not is_status(t)]  # one bubble: kept text, failure, summary
    kept, failure, _ = ended.split("\n\n", 2)
    assert kept.startswith("MOCK"), "what Claude had written before it stalled stays in the chat"
    assert failure.startswith("⏱ Stopped: Claude Code printed nothing for 2s (last: writing the answer)"), failure
    assert await daemon.wait_no_strays() == []


async def test_the_status_preview_in_a_group_is_formatted(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    await start_bot(telegram_edit_interval=0.5)  # type: ignore[operator]
    telegram.user_sends("MDSTREAM SLOW", chat_id=GROUP)  # no drafts in groups: the status message previews
    await telegram.wait_for(lambda: any("That is all." in t for t in telegram.texts_to(GROUP)), within=30)
    previews = [c for c in telegram.calls_of("editMessageText") if "step_" in c.params.get("text", "")]
    assert previews, "the status message showed the answer so far"
    for call in previews:
        assert "**" not in call.params["text"] and "```" not in call.params["text"], call.params["text"]
    assert any(e["type"] == "pre" for c in previews for e in c.params.get("entities") or [])


async def test_cli_crashing(start_bot: Callable[..., object], telegram: FakeTelegram, tmp_path: Path,
                            claude_cli: Path) -> None:  # fmt: skip
    wrapper = tmp_path / "claude-wrapper"
    wrapper.write_text("#!/bin/sh\necho 'panic: out of cheese' >&2\nexit 2\n")
    wrapper.chmod(0o755)
    daemon: Daemon = await start_bot(claude_bin=str(wrapper))  # type: ignore[assignment]
    telegram.user_sends("hello")
    await wait_answer(telegram, "out of cheese")
    assert next(t for t in answers(telegram) if "cheese" in t).startswith("⚠️ Claude Code failed")
    wrapper.write_text(f'#!/bin/sh\nexec "{claude_cli}" "$@"\n')
    telegram.user_sends("hello again")
    await wait_answer(telegram, "MOCK reply to: hello again")
    assert daemon.app[BOT].started


async def test_documents_and_photos_are_saved_safely(
    bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    telegram.user_sends_document("../../../etc/passwd", b"root:x:0:0\n", caption="what is this file?")
    await wait_answer(telegram, "MOCK reply to:")
    uploads = bot.settings.workdir / "uploads" / str(USER)
    saved = list(uploads.iterdir())
    assert len(saved) == 1 and saved[0].read_bytes() == b"root:x:0:0\n"
    assert saved[0].name.endswith("-passwd") and saved[0].parent == uploads.resolve()
    prompt = mock_api.user_texts()[-1]
    assert prompt.startswith("what is this file?") and str(saved[0]) in prompt
    telegram.user_sends_photo(TINY_JPEG, caption="what is in this picture?")
    await telegram.wait_for(lambda: len(list(uploads.iterdir())) == 2)
    await wait_answer(telegram, "saved at", within=20)
    await wait_idle(bot, telegram)
    assert any("[The user sent a photo, saved at" in text for text in mock_api.user_texts())
    last_user = [m for m in mock_api.requests[-1]["messages"] if m["role"] == "user"][-1]
    images = [b for b in last_user["content"] if b.get("type") == "image"]
    assert images and images[0]["source"]["media_type"] == "image/jpeg", "Claude sees the picture itself"
    big = bot.settings.telegram_max_file_mb
    telegram.user_sends_document("huge.bin", b"x" * (int(big * 1024 * 1024) + 1))
    await wait_answer(telegram, "I could not take that file")
    assert len(list(uploads.iterdir())) == 2


async def test_an_album_of_photos_is_one_turn(bot: Daemon, telegram: FakeTelegram, mock_api: MockAnthropic) -> None:
    telegram.user_sends_photo(TINY_JPEG, caption="compare these", album="g1")
    telegram.user_sends_photo(TINY_JPEG, album="g1")
    telegram.user_sends_photo(TINY_JPEG, album="g1")
    await wait_answer(telegram, "MOCK reply to:")
    await wait_idle(bot, telegram)
    turns = [r for r in mock_api.requests if "sent 3 photos together" in json.dumps(r["messages"])]
    assert turns, "the three photos reached Claude as one prompt"
    last_user = [m for m in turns[0]["messages"] if m["role"] == "user"][-1]
    assert [b["type"] for b in last_user["content"]].count("image") == 3
    text = next(b["text"] for b in last_user["content"] if b.get("type") == "text" and "together" in b["text"])
    assert text.startswith("compare these\n\n[The user sent 3 photos together, saved at:\n- ")
    assert len(list((bot.settings.workdir / "uploads" / str(USER)).iterdir())) == 3, "none overwrote another"
    assert len(answers(telegram)) == 1 and len(status_messages(telegram, gone=True)) == 1, "one turn"
    # An item that cannot be taken is said, and the rest of its album still makes one turn.
    big = bot.settings.telegram_max_file_mb
    telegram.user_sends_document("notes.txt", b"some notes", album="g2")
    telegram.user_sends_document("huge.bin", b"x" * (int(big * 1024 * 1024) + 1), album="g2")
    await wait_answer(telegram, "I could not take that file")
    await telegram.wait_for(lambda: any("[The user sent a file, saved at" in json.dumps(r["messages"])
                                        for r in mock_api.requests), within=30)  # fmt: skip
    await wait_idle(bot, telegram)
    assert len(status_messages(telegram, gone=True)) == 2


async def test_drafts_stream_the_answer_in_private_chats(bot: Daemon, telegram: FakeTelegram) -> None:
    telegram.user_sends("LONG40 SLOW")
    await wait_answer(telegram, "w39", within=30)
    drafts = telegram.calls_of("sendMessageDraft")
    assert len(drafts) >= 2
    texts = [d.params["text"] for d in drafts]
    assert texts == sorted(texts, key=len) and texts[0].startswith("w0")
    assert len({d.params["draft_id"] for d in drafts}) == 1


async def test_drafts_are_formatted_as_the_answer_will_be(bot: Daemon, telegram: FakeTelegram) -> None:
    telegram.user_sends("MDSTREAM SLOW")
    await wait_answer(telegram, "That is all.", within=30)
    drafts = [c for c in telegram.calls_of("sendMessageDraft") if c.status == 200]
    assert len(drafts) >= 3, "the answer streamed as drafts"
    for call in drafts:
        text = call.params["text"]
        assert "**" not in text and "```" not in text and "##" not in text, f"raw Markdown in a draft: {text!r}"
    kinds = [{e["type"] for e in c.params.get("entities") or []} for c in drafts]
    assert any("bold" in k for k in kinds)
    open_block = [c for c, k in zip(drafts, kinds, strict=True) if "def step_" in c.params["text"] and "pre" in k]
    assert open_block, "a code block still being written is shown as code"
    assert all(c.status == 200 for c in telegram.calls_of("sendMessageDraft"))


async def test_without_drafts_the_status_message_previews_the_answer(bot: Daemon, telegram: FakeTelegram) -> None:
    telegram.drafts_supported = False
    telegram.user_sends("LONG40 SLOW")
    await wait_answer(telegram, "w39", within=30)
    assert len(telegram.calls_of("sendMessageDraft")) == 1, "tried once, then fell back"
    edits = telegram.calls_of("editMessageText")
    assert any("w1 w2" in c.params["text"] for c in edits), "the status message showed the answer so far"


async def test_http_timeouts_alert_the_notify_chat(start_bot: Callable[..., object], telegram: FakeTelegram) -> None:
    import openai

    daemon: Daemon = await start_bot(activity_timeout=2, telegram_notify_id="555")  # type: ignore[assignment]
    with pytest.raises(openai.APIStatusError):
        await daemon.client().chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "HANG"}])
    await telegram.wait_for(lambda: telegram.texts_to(555))
    alert = telegram.texts_to(555)[0]
    assert alert.startswith("⏱ An HTTP turn was stopped") and "printed nothing for 2s" in alert


async def test_conversation_survives_a_restart(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    first: Daemon = await start_bot()  # type: ignore[assignment]
    telegram.user_sends("before the restart")
    await wait_answer(telegram, "MOCK reply to: before the restart")
    await wait_idle(first, telegram)
    await first.app[BOT].stop()
    await first.engine.close()
    second: Daemon = await start_bot()  # type: ignore[assignment]
    telegram.user_sends("after the restart")
    await wait_answer(telegram, "MOCK reply to: after the restart")
    said = [t.removeprefix(f"{FILES_NOTE}\n") for r, t in mock_api.dialogue() if r == "user"]
    # The session went on, and the message the first run had read was not delivered (and run) again.
    assert said == ["before the restart", "after the restart"], said
    assert second.app[BOT].started


async def test_network_errors_are_retried_and_entities_fall_back(bot: Daemon, telegram: FakeTelegram) -> None:
    telegram.fail_next("sendMessage", Fault(502, "Bad Gateway"), times=2)
    telegram.user_sends("through a flaky network")
    await wait_answer(telegram, "MOCK reply to: through a flaky network")
    assert [c.status for c in telegram.calls_of("sendMessage")][:3] == [502, 502, 200]
    await wait_idle(bot, telegram)
    telegram.user_sends("**bold** reply please SLOW")
    await telegram.wait_for(lambda: len(status_messages(telegram, gone=True)) == 2)  # the next send: the answer
    telegram.fail_next("sendMessage", Fault(400, "Bad Request: can't parse entities: unsupported start tag"))
    await wait_answer(telegram, "bold reply please SLOW")
    refused = [c for c in telegram.calls_of("sendMessage") if c.status == 400]
    assert len(refused) == 1 and refused[0].params.get("entities")
    answer = next(m for m in telegram.sent_to(USER) if "reply please SLOW" in m.text)
    assert answer.entities == [], "sent again as plain text"


async def serve_bot(
    telegram: FakeTelegram, claude_cli: Path, tmp_path: Path, *, grace: float, stderr: int
) -> tuple[asyncio.subprocess.Process, int]:
    """`claude-max serve` as a process of its own, with the bot on the fake Bot API; (process, HTTP port)."""
    import os
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ, "CLAUDE_BIN": str(claude_cli), "STATE_DIR": str(tmp_path / "state"), "PROXY_PORT": str(port),
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": telegram.root, "TELEGRAM_ALLOWED_USERS": str(USER),
        "SHUTDOWN_GRACE": f"{grace:g}",
    }  # fmt: skip
    daemon = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "claude-max"), "serve", "--env-file", str(empty_env(tmp_path)),
        env=env, stderr=stderr,
    )  # fmt: skip
    return daemon, port


async def test_sigterm_stops_the_bot_quickly(
    telegram: FakeTelegram, cli_env: str, claude_cli: Path, tmp_path: Path, mock_api: MockAnthropic
) -> None:
    import signal

    daemon, _ = await serve_bot(telegram, claude_cli, tmp_path, grace=1, stderr=asyncio.subprocess.PIPE)
    try:
        await telegram.wait_for(lambda: telegram.calls_of("setMyCommands"))
        telegram.user_sends("SLEEP_TOOL before shutdown")
        await telegram.wait_for(lambda: any("💻 Bash" in m.text for m in status_messages(telegram)), within=20)
        started = asyncio.get_running_loop().time()
        daemon.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            code = await daemon.wait()
        assert code == 0
        assert asyncio.get_running_loop().time() - started < 8
        assert any("the daemon is shutting down" in t for t in answers(telegram)), "the chat was told"
        assert await wait_no_processes(cli_env, within=5) == []
        assert daemon.stderr is not None
        log = (await daemon.stderr.read()).decode()
        assert "event=telegram_stopped" in log and TOKEN not in log
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()


async def test_doctor_checks_telegram(telegram: FakeTelegram, cli_env: str, claude_cli: Path, tmp_path: Path) -> None:
    import os
    import sys

    from tests.test_daemon import free_port

    command = str(Path(sys.executable).parent / "claude-max")
    base = {
        **os.environ, "CLAUDE_BIN": str(claude_cli), "STATE_DIR": str(tmp_path / "state"),
        "PROXY_PORT": str(free_port()), "TELEGRAM_API_URL": telegram.root, "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_ALLOWED_USERS": str(USER),
    }  # fmt: skip

    async def run(*args: str, **env: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            command, *args, "--env-file", str(empty_env(tmp_path)), env={**base, **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await process.communicate()
        return process.returncode or 0, out.decode()

    code, out = await run("doctor")
    assert code == 0, out
    assert "valid, the bot is @claude_max_test_bot" in out and "Telegram polling: free" in out
    assert TOKEN not in out
    code, out = await run("doctor", TELEGRAM_BOT_TOKEN="4242:not-the-right-one")
    assert code == 1 and "Telegram rejects TELEGRAM_BOT_TOKEN" in out and "@BotFather" in out
    code, out = await run("doctor", TELEGRAM_ALLOWED_USERS="")
    assert code == 1 and "TELEGRAM_ALLOWED_USERS is empty" in out
    telegram.polled_elsewhere = True  # a second daemon on the same token
    code, out = await run("doctor")
    assert code == 1 and "Telegram polling" in out and "only one bot instance" in out
    code, out = await run("serve")
    assert code == 2 and "cannot start: Telegram polling" in out


async def test_a_telegram_turn_waits_for_a_slot_in_the_engines_queue(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    """With every slot busy, a chat message waits in the engine's queue, where turns get slots in arrival order,
    beyond QUEUE_WAIT and without ever leaving it (no retry loop in which HTTP requests could pass it). /stop ends
    the wait at once."""
    daemon: Daemon = await start_bot(max_concurrent=1, queue_wait=1)  # type: ignore[assignment]
    client = daemon.client()

    def shown_waiting() -> int:
        calls = telegram.calls_of("sendMessage") + telegram.calls_of("editMessageText")
        return sum("waiting for a free Claude Code slot" in str(c.params.get("text")) for c in calls)

    def occupy(text: str) -> asyncio.Task[object]:
        messages = [{"role": "user", "content": f"LONG100 SLOW {text}"}]  # 5 s of answer
        return asyncio.create_task(client.chat.completions.create(model="sonnet", messages=messages))  # type: ignore[arg-type]

    busy = occupy("first")
    await telegram.wait_for(lambda: mock_api.in_flight == 1, within=20)
    telegram.user_sends("from the chat")
    await telegram.wait_for(lambda: daemon.engine.waiting == 1, within=5)
    queued = []
    for _ in range(20):  # two seconds, twice QUEUE_WAIT: always in the queue
        queued.append(daemon.engine.waiting)
        await asyncio.sleep(0.1)
    assert queued == [1] * 20
    await busy
    await wait_answer(telegram, "MOCK reply to: from the chat")
    assert shown_waiting() > 0, "the chat was told it waits for a slot"
    # Stopped while it waits: nothing runs, the chat is told.
    busy = occupy("again")
    await telegram.wait_for(lambda: mock_api.in_flight == 1, within=20)
    telegram.user_sends("never run")
    await telegram.wait_for(lambda: daemon.engine.waiting == 1, within=5)
    telegram.user_sends("/stop")
    await wait_answer(telegram, "⏹ Stopping.")
    await telegram.wait_for(lambda: status_messages(telegram)[-1].text.startswith("⏹ Stopped"), within=20)
    assert daemon.engine.waiting == 0
    await busy
    assert "never run" not in [newest_user_text(r) for r in mock_api.requests]


async def test_sigterm_with_the_bot_api_out_of_reach_drains_at_once(
    telegram: FakeTelegram, cli_env: str, claude_cli: Path, tmp_path: Path
) -> None:
    import signal

    import aiohttp

    daemon, port = await serve_bot(telegram, claude_cli, tmp_path, grace=5, stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": "sonnet", "messages": [{"role": "user", "content": "after the signal"}]}
    try:
        await telegram.wait_for(lambda: telegram.calls_of("setMyCommands"))
        await asyncio.sleep(1)  # polling
        await telegram.stop()  # the Bot API is out of reach: the poller goes into its retry backoff
        async with aiohttp.ClientSession() as http:
            running = {"model": "sonnet", "messages": [{"role": "user", "content": "SLEEP_TOOL keeps the drain open"}]}
            long_turn = asyncio.create_task(http.post(url, json=running))
            await asyncio.sleep(2)
            daemon.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            async with http.post(url, json=body) as response:
                assert response.status == 503, "new turns are refused from the signal on, not after the poller"
                assert (await response.json())["error"]["code"] == "shutting_down"
            async with asyncio.timeout(30):
                assert await daemon.wait() == 0
            (await long_turn).close()
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
