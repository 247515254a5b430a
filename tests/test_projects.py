"""Telegram as a remote for Claude Code: projects (PROJECTS, /project) and sessions to go on with (/resume),
with the real CLI and the fake Bot API."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import TELEGRAM_USER as USER
from tests.fake_telegram import FakeTelegram, SentMessage
from tests.mock_anthropic import MockAnthropic


def buttons(message: SentMessage) -> list[tuple[str, str]]:
    markup = message.reply_markup or {}
    return [(b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row]


async def reply_with(telegram: FakeTelegram, words: str, within: float = 30) -> SentMessage:
    def found() -> SentMessage | None:
        return next((m for m in reversed(telegram.sent_to(USER)) if words in m.text and not m.deleted), None)

    try:
        await telegram.wait_for(lambda: found() is not None, within=within)
    except TimeoutError:
        raise AssertionError(f"no message with {words!r} in {telegram.texts_to(USER)}") from None
    message = found()
    assert message is not None
    return message


def asked_with(mock: MockAnthropic, text: str) -> dict[str, Any]:
    return next(body for body in reversed(mock.requests) if text in json.dumps(body.get("messages")))


async def test_each_project_is_its_own_directory_and_session(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic, tmp_path: Path
) -> None:
    root, outside = tmp_path / "src", tmp_path / "outside"
    for directory in (root / "api", root / "web", outside):
        directory.mkdir(parents=True)
    (root / "escape").symlink_to(outside)  # a link out of the root is no project
    (root / ".hidden").mkdir()
    await start_bot(projects=str(root))  # type: ignore[operator]
    telegram.user_sends("/project")
    listing = await reply_with(telegram, "Pick one")
    assert buttons(listing) == [("✅ api", "project:api"), ("web", "project:web")]
    telegram.user_sends("TOUCH_TOOL one")
    await telegram.wait_for(lambda: (root / "api" / "mock_created.txt").exists(), within=30)
    await reply_with(telegram, "Tool said")
    telegram.user_presses(listing, "project:web")
    await reply_with(telegram, "📁 Project web")
    await telegram.wait_for(lambda: listing.text.startswith("Project: web."))  # the listing says the new choice
    assert buttons(listing) == [("api", "project:api"), ("✅ web", "project:web")]
    telegram.user_sends("TOUCH_TOOL two")
    await telegram.wait_for(lambda: (root / "web" / "mock_created.txt").exists(), within=30)
    await telegram.wait_for(lambda: sum("Tool said" in t for t in telegram.texts_to(USER)) == 2, within=30)
    telegram.user_sends("/project api")
    back = await reply_with(telegram, "📁 Project api")
    assert "its session goes on" in back.text
    telegram.user_sends("where were we")
    await reply_with(telegram, "MOCK reply to: where were we")
    history = json.dumps(asked_with(mock_api, "where were we")["messages"])
    assert "TOUCH_TOOL one" in history and "TOUCH_TOOL two" not in history, "api's session, not web's"
    for name in ("../outside", "escape", ".hidden", "nope"):
        telegram.user_sends(f"/project {name}")
        refused = await reply_with(telegram, f"There is no project {name!r}")
        assert refused.text.endswith("/project lists the projects.")
    telegram.user_sends("/status")
    status = await reply_with(telegram, "\nMode: ")
    assert status.text.startswith("Project: api")
    assert not (outside / "mock_created.txt").exists()


async def test_a_project_whose_directory_vanished_is_said_and_nothing_runs(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic, tmp_path: Path
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    await start_bot(projects=f"gone={gone}")  # type: ignore[operator]
    gone.rmdir()
    asked = len(mock_api.requests)
    telegram.user_sends("hello")
    failure = await reply_with(telegram, "is gone")
    assert failure.text.startswith(f"⚠️ The directory of project 'gone' ({gone}) is gone")
    assert len(mock_api.requests) == asked
    telegram.user_sends("/resume")
    await telegram.wait_for(lambda: sum("is gone" in t for t in telegram.texts_to(USER)) == 2)
    assert telegram.texts_to(USER)[-1].endswith("is gone. /project picks another.")
    telegram.user_sends("/status")
    status = await reply_with(telegram, "\nMode: ")
    assert status.text.startswith(f"Project: gone (⚠️ The directory of project 'gone' ({gone}) is gone)\n"), (
        "said as the failure said it"
    )


async def test_a_switch_mid_turn_leaves_the_turn_and_what_was_queued_in_their_project(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic, tmp_path: Path
) -> None:
    from tests.test_permissions import button, wait_prompt

    root = tmp_path / "src"
    for name in ("api", "web"):
        (root / name).mkdir(parents=True)
    await start_bot(projects=str(root), telegram_permission_mode="ask")  # type: ignore[operator]
    telegram.user_sends("TOUCH_TOOL first")  # in api; the approval prompt holds the turn
    first = await wait_prompt(telegram)
    telegram.user_sends("TOUCH_TOOL queued")  # sent in api too, while the turn runs
    await reply_with(telegram, "📥 Queued")
    telegram.user_sends("/project WEB")  # (a name in other letters' case is found)
    switched = await reply_with(telegram, "📁 Project web")
    assert switched.text.endswith("The running turn and 1 queued message go on in api."), switched.text
    telegram.user_sends("/status")
    status = (await reply_with(telegram, "\nMode: ")).text.splitlines()
    assert status[:2] == ["Project: web", "Session: none yet"], status
    assert any(line.startswith("Running (in api): ") for line in status), status
    assert "Queued: 1 (1 for api)" in status, status
    telegram.user_presses(first, button(first, "Allow"))
    await telegram.wait_for(lambda: (root / "api" / "mock_created.txt").exists(), within=30)
    (root / "api" / "mock_created.txt").unlink()
    queued = await wait_prompt(telegram, 2)
    telegram.user_presses(queued, button(queued, "Allow"))
    await telegram.wait_for(lambda: (root / "api" / "mock_created.txt").exists(), within=30)
    await telegram.wait_for(lambda: sum("Tool said" in t for t in telegram.texts_to(USER)) == 2, within=30)
    assert not (root / "web" / "mock_created.txt").exists(), "the queued message ran where it was sent"
    history = json.dumps(asked_with(mock_api, "TOUCH_TOOL queued")["messages"])
    assert "TOUCH_TOOL first" in history, "in api's session"
    telegram.user_sends("now in web")
    await reply_with(telegram, "MOCK reply to: now in web")
    assert "TOUCH_TOOL" not in json.dumps(asked_with(mock_api, "now in web")["messages"]), "web's own session"


async def test_a_resume_listing_of_another_project_says_whose_session_it_is(
    start_bot: Callable[..., object], telegram: FakeTelegram, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    for name in ("api", "web"):
        (root / name).mkdir(parents=True)
    await start_bot(projects=str(root))  # type: ignore[operator]
    telegram.user_sends("hello api")
    await reply_with(telegram, "MOCK reply to: hello api")
    telegram.user_sends("/resume")
    listing = await reply_with(telegram, "Pick one")
    telegram.user_sends("/project web")
    await reply_with(telegram, "📁 Project web")
    telegram.user_presses(listing, buttons(listing)[0][1])  # the listing was api's
    told = await reply_with(telegram, "That session is project api's")
    assert "/project api, then /resume" in told.text
    telegram.user_sends("/status")
    assert "Session: none yet" in (await reply_with(telegram, "\nMode: ")).text, "web's session is unchanged"


async def test_resume_goes_on_with_a_session_begun_in_a_terminal(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic, tmp_path: Path,
    claude_cli: Path,
) -> None:  # fmt: skip
    desk = tmp_path / "desk"
    desk.mkdir()
    # The user at the desk: the real CLI, run directly in the project's directory.
    process = await asyncio.create_subprocess_exec(
        str(claude_cli), "-p", "hello from the desk", cwd=desk, env=dict(os.environ),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(process.wait(), 60) == 0
    # A session file being written (half a line) and one that is not JSON: listed around, not failed on.
    sessions = next((Path(os.environ["CLAUDE_CONFIG_DIR"]) / "projects").glob("*desk"))
    (sessions / "00000000-0000-4000-8000-000000000000.jsonl").write_text('{"type":"user","message":{"ro')
    (sessions / "11111111-1111-4111-8111-111111111111.jsonl").write_bytes(b"\x00\xff not json\n")
    await start_bot(projects=f"desk={desk}")  # type: ignore[operator]
    telegram.user_sends("/resume")
    listing = await reply_with(telegram, "Pick one")
    (label, data), *others = buttons(listing)
    assert label == "just now · hello from the desk" and not others, buttons(listing)
    telegram.user_presses(listing, data)
    await reply_with(telegram, "▶️ Continuing session")
    await telegram.wait_for(lambda: buttons(listing) == [("✅ " + label, data)])  # the listing ticks the pick
    telegram.user_sends("and now from the phone")
    await reply_with(telegram, "MOCK reply to: and now from the phone")
    history = json.dumps(asked_with(mock_api, "and now from the phone")["messages"])
    assert "hello from the desk" in history, "the terminal's turn reached Claude as history"
    telegram.user_presses(listing, "resume:22222222-2222-4222-8222-222222222222")
    await reply_with(telegram, "That session is no longer there")
    # A session the bot began is listed by what the user wrote, not by the note the bot put before it.
    telegram.user_sends("/new")
    await reply_with(telegram, "Fresh session")
    telegram.user_sends("fresh from the phone")
    await reply_with(telegram, "MOCK reply to: fresh from the phone")
    telegram.user_sends("/resume")
    await telegram.wait_for(lambda: sum("Pick one" in t for t in telegram.texts_to(USER)) == 2)
    relisted = [m for m in telegram.sent_to(USER) if "Pick one" in m.text][-1]
    labels = [label for label, _ in buttons(relisted)]
    assert labels[0] == "✅ just now · fresh from the phone" and labels[1].endswith("· hello from the desk"), labels
    telegram.user_presses(relisted, buttons(relisted)[0][1])  # the chat's own session: nothing changes
    await reply_with(telegram, "is already this chat's")


GROUP = -1001234567  # a forum supergroup


async def test_each_forum_topic_is_its_own_conversation_and_gets_every_message_of_its_turns(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    await start_bot(telegram_permission_mode="ask")  # type: ignore[operator]
    telegram.user_sends("LONG3000 remember apples", chat_id=GROUP, topic=7)  # an answer of several messages
    telegram.user_sends("TOUCH_TOOL and pears", chat_id=GROUP, topic=9)  # a turn that asks for approval

    def in_topic(topic: int, words: str) -> list[SentMessage]:
        return [m for m in telegram.sent_to(GROUP) if m.thread_id == topic and words in m.text]

    def prompts() -> list[SentMessage]:
        return [m for m in telegram.sent_to(GROUP) if any(label.endswith("Allow") for label, _ in buttons(m))]

    try:
        await telegram.wait_for(lambda: bool(prompts()), within=30)
    except TimeoutError:
        raise AssertionError([(m.thread_id, m.text[:80], buttons(m)) for m in telegram.sent_to(GROUP)]) from None
    (prompt,) = prompts()
    assert prompt.thread_id == 9, "the approval prompt is shown in the topic the turn came from"
    telegram.user_presses(prompt, next(data for label, data in buttons(prompt) if label.endswith("Allow")))
    await telegram.wait_for(lambda: bool(in_topic(9, "Tool said")), within=30)
    # (the status message previews the answer's end in a group: the turn is over when its summary came)
    await telegram.wait_for(lambda: bool(in_topic(7, "w2999")) and bool(in_topic(7, "✅ Done · ")), within=30)
    answer_parts = [m for m in telegram.sent_to(GROUP) if m.text.startswith("w") or " w1" in m.text]
    assert len(answer_parts) >= 3 and {m.thread_id for m in answer_parts} == {7}
    sent = telegram.calls_of("sendMessage", "sendChatAction")
    assert sent and all(call.params.get("message_thread_id") in ("7", "9", 7, 9) for call in sent), [
        (c.method, c.params.get("message_thread_id")) for c in sent
    ]
    telegram.user_sends("what fruit did I name?", chat_id=GROUP, topic=9)
    await telegram.wait_for(lambda: bool(in_topic(9, "MOCK reply to: what fruit")), within=30)
    history = json.dumps(asked_with(mock_api, "what fruit did I name?")["messages"])
    assert "pears" in history and "apples" not in history, "topic 9's session, not topic 7's"
    telegram.user_sends("/status", chat_id=GROUP, topic=7)
    await telegram.wait_for(lambda: bool(in_topic(7, "Session:")), within=10)


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


async def test_claude_sends_files_of_the_project_back_and_nothing_else(
    start_bot: Callable[..., object], telegram: FakeTelegram, tmp_path: Path
) -> None:
    project, outside = tmp_path / "web", tmp_path / "secret.txt"
    project.mkdir()
    outside.write_text("not yours")
    (project / "chart.png").write_bytes(PNG)
    (project / "notes.txt").write_text("the notes")
    with (project / "huge.bin").open("wb") as huge:  # 60 MB, sparse
        huge.truncate(60 * 1024 * 1024)
    await start_bot(projects=f"web={project}", telegram_permission_mode="ask")  # type: ignore[operator]
    calls = {
        'CALL_CLIENT send_file {"path": "chart.png", "caption": "the chart"}': "Sent chart.png to the chat as a photo",
        'CALL_CLIENT send_file {"path": "notes.txt"}': "Sent notes.txt to the chat as a document",
        'CALL_CLIENT send_file {"path": "../secret.txt"}': "is outside the project directory",
        f'CALL_CLIENT send_file {{"path": "{outside}"}}': "is outside the project directory",
        'CALL_CLIENT send_file {"path": "missing.txt"}': "there is no file missing.txt in the project",
        'CALL_CLIENT send_file {"path": "huge.bin"}': "huge.bin is 60.0 MB; Telegram takes at most 50 MB",
        'CALL_CLIENT send_file {"path": "empty.txt"}': "empty.txt is empty, and Telegram does not take empty files",
    }
    (project / "empty.txt").touch()
    for index, (text, result) in enumerate(calls.items(), start=1):
        telegram.user_sends(text)
        await telegram.wait_for(lambda n=index: sum("Tool said" in t for t in telegram.texts_to(USER)) == n, within=30)
        assert result in [t for t in telegram.texts_to(USER) if "Tool said" in t][-1]
    assert [(u.kind, u.filename, u.caption) for u in telegram.uploads] == [
        ("photo", "chart.png", "the chart"), ("document", "notes.txt", ""),
    ]  # fmt: skip
    assert telegram.uploads[0].data == PNG and telegram.uploads[1].data == b"the notes"
    first = next(t for t in telegram.texts_to(USER) if "Sent chart.png" in t)
    summary, log = first.split("\n\n")[-1].split("\n")
    assert " · 1 tool (send_file) · " in summary and log == "📎 send_file: chart.png", first
    missing = next(t for t in telegram.texts_to(USER) if "no file missing.txt" in t)
    assert missing.endswith("\n⚠️ 📎 send_file: missing.txt (not sent)"), "a file not sent does not look sent"
    assert not any("Allow" in json.dumps(m.reply_markup) for m in telegram.sent_to(USER) if m.reply_markup), (
        "the daemon's own tool is not asked about"
    )


async def test_a_reply_to_an_answer_brings_that_answer_along(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    await start_bot()  # type: ignore[operator]
    telegram.user_sends("name a colour")
    answer = await reply_with(telegram, "MOCK reply to: name a colour")
    telegram.user_sends("why that one?", replying_to=answer)
    await reply_with(telegram, "why that one?")
    sent = json.dumps(asked_with(mock_api, "why that one?")["messages"][-1], ensure_ascii=False)
    assert "[Replying to your earlier answer: “MOCK reply to: name a colour”]" in sent


async def test_new_says_what_queued_messages_it_dropped(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    await start_bot()  # type: ignore[operator]
    telegram.user_sends("SLEEP_TOOL busy")
    await reply_with(telegram, "Bash")
    telegram.user_sends("queued one")
    telegram.user_sends("queued two")
    await reply_with(telegram, "Queued")
    telegram.user_sends("/new")
    fresh = await reply_with(telegram, "Fresh session")
    assert fresh.text.endswith("Dropped 2 queued messages."), fresh.text


async def test_messages_that_waited_while_the_daemon_was_down_are_asked_about(
    start_bot: Callable[..., object], telegram: FakeTelegram, mock_api: MockAnthropic
) -> None:
    def sent_to_claude(text: str) -> bool:
        return any(text in json.dumps(body.get("messages")) for body in mock_api.requests)

    await start_bot()  # type: ignore[operator]
    telegram.user_sends("deploy now", sent_ago=2 * 3600 + 4 * 60 + 10)
    telegram.user_sends("and tidy up", sent_ago=5400 + 10)
    first = await reply_with(telegram, "waited 2 h 4 min while I was offline. Run it now?")
    second = await reply_with(telegram, "waited 1 h 30 min while I was offline")
    run, skip = buttons(first)
    assert run[0] == "▶️ Run it" and run[1].startswith("late:run:") and skip[0] == "✖️ Skip"
    telegram.user_sends("/mode", sent_ago=3600)  # a command that waited is handled as usual
    await reply_with(telegram, "Mode: ")
    telegram.user_sends("what time is it?")  # sent now: answered at once
    await reply_with(telegram, "MOCK reply to: what time is it?")
    assert sum("Run it now?" in t for t in telegram.texts_to(USER)) == 2, "the command was not asked about"
    assert not sent_to_claude("deploy now") and not sent_to_claude("and tidy up"), "nothing ran unasked"
    telegram.user_presses(second, buttons(second)[1][1])
    await telegram.wait_for(lambda: second.text.endswith("✖️ Skipped: nothing was sent to Claude."))
    assert second.reply_markup is None
    telegram.user_presses(first, run[1])
    await reply_with(telegram, "MOCK reply to: deploy now")
    assert first.text.endswith("▶️ Running it.") and not sent_to_claude("and tidy up")
    telegram.user_presses(first, run[1])  # pressed again (an old keyboard): it ran once
    await telegram.wait_for(
        lambda: any("no longer waiting" in c.params.get("text", "") for c in telegram.calls_of("answerCallbackQuery"))
    )
    assert first.text.endswith("▶️ Running it."), "a toast, the question kept as it was"
    telegram.user_sends("done?")
    await reply_with(telegram, "MOCK reply to: done?")
    assert [t for t in mock_api.user_texts() if t.endswith(("deploy now", "done?", "tidy up"))] == [
        "deploy now",
        "done?",
    ]
