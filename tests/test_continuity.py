"""Conversations continue in the CLI's own session, whether the client names them or not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon
from tests.mock_anthropic import MockAnthropic


async def ask(daemon: Daemon, messages: list[dict], **kwargs: object) -> str:
    completion = await daemon.client().chat.completions.create(model="sonnet", messages=messages, **kwargs)
    content = completion.choices[0].message.content
    assert content is not None
    return content


def newest_user_turn(mock_api: MockAnthropic) -> str:
    """All text of the last user message the API saw (what this turn sent into the session)."""
    newest = [m for m in mock_api.requests[-1]["messages"] if m["role"] == "user"][-1]
    content = newest["content"]
    return content if isinstance(content, str) else "\n".join(b.get("text", "") for b in content)


async def test_resent_history_resumes_the_session(daemon: Daemon, mock_api: MockAnthropic) -> None:
    history = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "my name is Ada"}]
    first = await ask(daemon, history)
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "what is my name?"}]
    second = await ask(daemon, history)
    # The API got the earlier turn as real messages of the resumed session, not a flattened prompt.
    dialogue = mock_api.dialogue()
    assert dialogue[-1] == ("user", "what is my name?")
    assert ("assistant", first) in dialogue
    assert any(role == "user" and text.endswith("my name is Ada") for role, text in dialogue[:-1])
    assert "conversation_history" not in "".join(text for _, text in dialogue)
    # Clients may rewrite our answer's whitespace; the conversation is still recognised.
    history += [{"role": "assistant", "content": "  " + second.replace(" ", "  ") + "\n"}]
    history += [{"role": "user", "content": "third"}]
    await ask(daemon, history)
    dialogue = mock_api.dialogue()
    assert dialogue[-1] == ("user", "third")
    assert [text for role, text in dialogue if role == "user"][-2:] == ["what is my name?", "third"]


async def test_unknown_history_starts_a_session_that_carries_it(daemon: Daemon, mock_api: MockAnthropic) -> None:
    await ask(
        daemon,
        [
            {"role": "user", "content": "the code word is PELICAN"},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "what was the code word?"},
        ],
    )
    dialogue = mock_api.dialogue()
    assert len([d for d in dialogue if d[0] == "user"]) == 1, "one new session, one user turn"
    sent = dialogue[0][1]
    assert "<conversation_history>" in sent and "PELICAN" in sent and "Noted." in sent
    assert sent.endswith("what was the code word?")


async def test_explicit_conversation_id(daemon: Daemon, mock_api: MockAnthropic) -> None:
    client = daemon.client()
    headers = {"X-Conversation-Id": "chat-42"}
    await client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "remember 7"}], extra_headers=headers
    )
    await client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "which number?"}], extra_headers=headers
    )
    dialogue = mock_api.dialogue()
    assert dialogue[-1] == ("user", "which number?")
    assert any(text.endswith("remember 7") for _, text in dialogue[:-1])
    # metadata.conversation_id and user name conversations too, separately from the header.
    await client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "first of meta"}], metadata={"conversation_id": "m1"}
    )
    await client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "second of meta"}], metadata={"conversation_id": "m1"}
    )
    texts = [text for _, text in mock_api.dialogue()]
    assert any(t.endswith("first of meta") for t in texts) and not any("remember 7" in t for t in texts)
    await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "u1"}], user="alice")
    await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "u2"}], user="alice")
    assert [t for _, t in mock_api.dialogue() if t in ("u1", "u2")] == ["u1", "u2"]


async def test_branch_does_not_disturb_the_original(daemon: Daemon, mock_api: MockAnthropic) -> None:
    base = [{"role": "user", "content": "start"}]
    first = await ask(daemon, base)
    line = [*base, {"role": "assistant", "content": first}]
    second = await ask(daemon, [*line, {"role": "user", "content": "path A"}])
    # A regenerate or edit: same prefix, another question. The session has moved on, so it cannot be resumed.
    await ask(daemon, [*line, {"role": "user", "content": "path B"}])
    branch = mock_api.dialogue()
    assert "path A" not in "".join(t for _, t in branch)
    assert "<conversation_history>" in branch[0][1]
    # The original line still continues in its own session.
    await ask(daemon, [*line, {"role": "user", "content": "path A"}, {"role": "assistant", "content": second},
                       {"role": "user", "content": "A again"}])  # fmt: skip
    original = mock_api.dialogue()
    assert original[-1] == ("user", "A again")
    assert ("user", "path A") in original and "path B" not in "".join(t for _, t in original)


async def test_instructions_are_sent_again_only_when_changed(daemon: Daemon, mock_api: MockAnthropic) -> None:
    messages = [{"role": "system", "content": "Rule one."}, {"role": "user", "content": "q1"}]
    a1 = await ask(daemon, messages)
    assert "<instructions>\nRule one.\n</instructions>" in mock_api.user_texts()[-2]
    messages += [{"role": "assistant", "content": a1}, {"role": "user", "content": "q2"}]
    a2 = await ask(daemon, messages)
    assert "instructions" not in newest_user_turn(mock_api)
    messages[0]["content"] = "Rule two."
    messages += [{"role": "assistant", "content": a2}, {"role": "user", "content": "q3"}]
    await ask(daemon, messages)
    assert "<instructions>\nRule two.\n</instructions>" in newest_user_turn(mock_api)
    assert mock_api.dialogue()[-1][1].endswith("q3")


async def test_lost_cli_session_falls_back_to_carried_history(
    start_daemon: Callable[..., object], mock_api: MockAnthropic, tmp_path: Path
) -> None:
    daemon: Daemon = await start_daemon(warm_max=0)  # type: ignore[assignment]  # a warm CLI would still hold it
    first = await ask(daemon, [{"role": "user", "content": "the sky is green here"}])
    for session_file in (tmp_path / "home" / ".claude" / "projects").rglob("*.jsonl"):
        session_file.unlink()
    answer = await ask(
        daemon,
        [
            {"role": "user", "content": "the sky is green here"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "what colour is the sky?"},
        ],
    )
    assert answer == "MOCK reply to: what colour is the sky?"
    sent = mock_api.dialogue()[0][1]
    assert "<conversation_history>" in sent and "the sky is green here" in sent


async def test_sessions_survive_a_restart(
    start_daemon: Callable[..., object], mock_api: MockAnthropic, tmp_path: Path
) -> None:
    first_daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    first = await ask(first_daemon, [{"role": "user", "content": "before restart"}])
    await first_daemon.engine.close()
    second_daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    await ask(
        second_daemon,
        [
            {"role": "user", "content": "before restart"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "after restart"},
        ],
    )
    dialogue = mock_api.dialogue()
    assert dialogue[-1] == ("user", "after restart")
    assert ("assistant", first) in dialogue


async def test_turns_of_one_conversation_are_serialised(daemon: Daemon, mock_api: MockAnthropic) -> None:
    client = daemon.client()
    headers = {"X-Conversation-Id": "serial"}

    async def turn(text: str) -> None:
        await client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": text}], extra_headers=headers
        )

    await asyncio.gather(turn("one SLOW"), turn("two SLOW"))
    assert mock_api.max_in_flight == 1
    later = mock_api.dialogue()
    assert len([t for r, t in later if r == "user"]) == 2, "the second turn resumed the first's session"
