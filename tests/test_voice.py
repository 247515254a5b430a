"""Voice messages as prompts, through a fake transcription server (OpenAI's /v1/audio/transcriptions)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bot import voice
from tests.conftest import TELEGRAM_USER as USER
from tests.fake_telegram import FakeTelegram
from tests.mock_anthropic import MockAnthropic

AUDIO = b"OggS fake opus audio"


@dataclass
class FakeTranscriber:
    text: str = "turn on the lights"
    status: int = 200
    delay: float = 0.0
    received: list[dict[str, object]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        self.received.append({"model": form.get("model"), "audio": upload.file.read(),
                              "auth": request.headers.get("Authorization")})  # fmt: skip
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response({"error": {"message": "model not loaded"}}, status=self.status)
        return web.json_response({"text": self.text})


@pytest.fixture
async def transcriber() -> AsyncIterator[FakeTranscriber]:
    fake = FakeTranscriber()
    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
    yield fake
    await runner.cleanup()


async def said(telegram: FakeTelegram, words: str, within: float = 30) -> str:
    await telegram.wait_for(lambda: any(words in t for t in telegram.texts_to(USER)), within=within)
    return next(t for t in telegram.texts_to(USER) if words in t)


async def test_a_voice_message_is_transcribed_shown_back_and_answered(
    start_bot: Callable[..., object], telegram: FakeTelegram, transcriber: FakeTranscriber
) -> None:
    await start_bot(transcribe_url=transcriber.url, transcribe_model="large-v3",  # type: ignore[operator]
                    transcribe_api_key="local-whisper-key-123")  # fmt: skip
    telegram.user_sends_voice(AUDIO)
    assert await said(telegram, "🎙 I heard") == "🎙 I heard: “turn on the lights”"
    await said(telegram, "MOCK reply to: turn on the lights")
    assert transcriber.received == [{"model": "large-v3", "audio": AUDIO, "auth": "Bearer local-whisper-key-123"}]


async def test_without_a_transcription_server_the_user_is_told_how_to_enable_it(
    start_bot: Callable[..., object], telegram: FakeTelegram
) -> None:
    await start_bot()  # type: ignore[operator]
    telegram.user_sends_voice(AUDIO)
    assert "set TRANSCRIBE_URL" in await said(telegram, "🎙 I cannot listen")


@pytest.mark.parametrize(
    ("trouble", "words"),
    [
        ("down", "cannot be reached"),
        ("error", "answered 500 (model not loaded)"),
        ("slow", "did not answer within 0.5 s"),
        ("silence", "nothing could be made out"),
        ("too big", "the limit is 20 MB"),
    ],
)
async def test_a_failed_transcription_is_said_and_nothing_reaches_claude(
    start_bot: Callable[..., object], telegram: FakeTelegram, transcriber: FakeTranscriber,
    mock_api: MockAnthropic, monkeypatch: pytest.MonkeyPatch, trouble: str, words: str,
) -> None:  # fmt: skip
    url = transcriber.url
    if trouble == "down":
        url = "http://127.0.0.1:9/v1"  # nothing listens there
    transcriber.status = 500 if trouble == "error" else 200
    transcriber.text = "   " if trouble == "silence" else transcriber.text
    if trouble == "slow":
        monkeypatch.setattr(voice, "TRANSCRIBE_TIMEOUT", 0.5)
        transcriber.delay = 3
    await start_bot(transcribe_url=url)  # type: ignore[operator]
    asked = len(mock_api.requests)
    telegram.user_sends_voice(AUDIO, size=60 * 1024 * 1024 if trouble == "too big" else None)
    failure = await said(telegram, "⚠️ I could not use that recording")
    assert words in failure and failure.endswith("Nothing was sent to Claude."), failure
    if trouble == "slow":  # the wait was seen: "typing…" while the server took its time
        assert telegram.calls_of("sendChatAction"), "no typing indicator while transcribing"
    telegram.user_sends("still there?")  # the chat goes on
    await said(telegram, "MOCK reply to: still there?")
    assert len(mock_api.requests) > asked and not any("lights" in str(r) for r in mock_api.requests)


async def test_a_voice_reply_brings_along_what_it_replies_to(
    start_bot: Callable[..., object], telegram: FakeTelegram, transcriber: FakeTranscriber, mock_api: MockAnthropic
) -> None:
    await start_bot(transcribe_url=transcriber.url)  # type: ignore[operator]
    telegram.user_sends("name a colour")
    await said(telegram, "MOCK reply to: name a colour")
    answer = next(m for m in telegram.sent_to(USER) if m.text.startswith("MOCK reply to: name a colour"))
    transcriber.text = "why that one"
    telegram.user_sends_voice(AUDIO, replying_to=answer)
    await said(telegram, "MOCK reply to: ")  # (the mock answers with the prompt's first line)
    await telegram.wait_for(lambda: any("why that one" in str(r) for r in mock_api.requests), within=30)
    asked = next(str(r) for r in mock_api.requests if "why that one" in str(r))
    assert "[Replying to your earlier answer: “MOCK reply to: name a colour”]" in asked


async def test_a_spoken_reason_to_deny_is_the_reason_not_a_new_prompt(
    start_bot: Callable[..., object], telegram: FakeTelegram, transcriber: FakeTranscriber, mock_api: MockAnthropic
) -> None:
    from tests.test_permissions import button, tool_said, wait_prompt

    daemon = await start_bot(transcribe_url=transcriber.url, telegram_permission_mode="ask")  # type: ignore[operator]
    telegram.user_sends("TOUCH_TOOL please")
    prompt = await wait_prompt(telegram)
    telegram.user_presses(prompt, button(prompt, "Deny with a reason"))
    await said(telegram, "Send why")
    transcriber.text = "not today, use the sandbox"
    telegram.user_sends_voice(AUDIO)
    await said(telegram, "✍️ Got it")
    await telegram.wait_for(lambda: tool_said(telegram), within=30)
    assert "not today, use the sandbox" in tool_said(telegram)[0], "Claude read the spoken reason"
    assert prompt.text.endswith("❌ Denied by User: not today, use the sandbox")
    assert not any("Queued" in t for t in telegram.texts_to(USER)), "the reason was not queued as a prompt"
    assert not (daemon.settings.workdir / "mock_created.txt").exists()  # type: ignore[attr-defined]
