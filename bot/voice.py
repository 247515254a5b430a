"""Voice and audio messages as prompts: transcribed by an OpenAI-compatible `/v1/audio/transcriptions`
server (TRANSCRIBE_URL: a local whisper server, or any service that speaks that API).

The wait is bounded (TRANSCRIBE_TIMEOUT), and every way it can fail is a `TranscriptionFailed` whose
message the chat is shown: an answer the user never gets would look like a dropped message.
"""

from __future__ import annotations

import logging

import httpx

from core import Settings

log = logging.getLogger("bot.voice")

TRANSCRIBE_TIMEOUT = 120.0  # seconds for one transcription, upload included
NOT_SET_UP = (
    "🎙 I cannot listen to voice messages here: the owner can set TRANSCRIBE_URL to a transcription server "
    "(an OpenAI-compatible /v1/audio/transcriptions endpoint, e.g. a local whisper server). Send text meanwhile."
)


class TranscriptionFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def endpoint(url: str) -> str:
    """The transcriptions route, whether TRANSCRIBE_URL names the server, its /v1 or the route itself."""
    url = url.rstrip("/")
    if url.endswith("/audio/transcriptions"):
        return url
    return url + ("/audio/transcriptions" if url.endswith("/v1") else "/v1/audio/transcriptions")


def reason(response: httpx.Response) -> str:
    """The words of an error answer: OpenAI's `error.message` (or a `detail`), else the start of a text body;
    "" for a body of markup or nothing."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return "" if text.startswith("<") else text[:160]
    error = body.get("error") if isinstance(body, dict) else None
    words = (error.get("message") if isinstance(error, dict) else error) or (
        body.get("detail") if isinstance(body, dict) else None
    )
    return " ".join(str(words).split())[:160] if words else ""


async def transcribe(settings: Settings, audio: bytes, filename: str, mime: str) -> str:
    """The text of a recording; `TranscriptionFailed` says why there is none."""
    headers = {}
    if settings.transcribe_api_key is not None:
        headers["Authorization"] = f"Bearer {settings.transcribe_api_key.get_secret_value()}"
    try:
        async with httpx.AsyncClient(timeout=TRANSCRIBE_TIMEOUT, trust_env=False) as http:
            response = await http.post(
                endpoint(settings.transcribe_url), headers=headers,
                files={"file": (filename, audio, mime)},
                data={"model": settings.transcribe_model, "response_format": "json"},
            )  # fmt: skip
        if response.status_code != 200:
            raise TranscriptionFailed(
                f"the transcription server answered {response.status_code}"
                + (f" ({why})" if (why := reason(response)) else "")
            )
        body = response.json()
    except httpx.TimeoutException:
        raise TranscriptionFailed(f"the transcription server did not answer within {TRANSCRIBE_TIMEOUT:g} s") from None
    except httpx.HTTPError as exc:
        raise TranscriptionFailed(f"the transcription server cannot be reached ({type(exc).__name__})") from None
    except ValueError:
        raise TranscriptionFailed("the transcription server's answer is not JSON") from None
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise TranscriptionFailed("the transcription server's answer has no text")
    if not text.strip():
        raise TranscriptionFailed("nothing could be made out in that recording")
    log.info("transcribed bytes=%d chars=%d", len(audio), len(text))
    return text.strip()
