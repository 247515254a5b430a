"""Property-based fuzzing of every request schema: whatever the body, the answer is a 200 or a 4xx in that
route's error shape, never a 500 (hypothesis, bounded in examples; the faces on a scripted engine).

The daemon runs in a thread of its own (hypothesis drives plain functions); the engine answers every turn
with "ok" after rendering its prompt, so a body that passes the checks is carried all the way to the CLI's
stdin format.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claude_max.daemon import compose
from core import Settings, TurnRequest
from tests.fast.fake_engine import FakeEngine, FakeTurn
from tests.fast.test_faces import done

EXAMPLES = 150


class PromptingEngine(FakeEngine):
    """Every turn says "ok", once its prompt was rendered as the real engine would (for a fresh session)."""

    def turn(self, request: TurnRequest) -> FakeTurn:
        json.dumps(request.prompt_for(None), ensure_ascii=False).encode()  # what would go to the CLI's stdin
        self.scripts.append([done("ok")])
        return super().turn(request)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    state: Path = tmp_path_factory.mktemp("fuzz") / "state"

    async def start() -> tuple[web.AppRunner, str]:
        values: dict[str, object] = {"state_dir": state, "proxy_port": 0, "claude_bin": "claude"}
        app_settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
        runner = web.AppRunner(compose(app_settings, engine=PromptingEngine.factory([], [])))  # type: ignore[arg-type]
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}"

    runner, url = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    yield url
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def check(path: str, status: int, answer: bytes) -> None:
    assert status < 500, (status, answer[:500])
    if status == 200:
        return
    error = json.loads(answer)
    if path.startswith("/v1/messages"):
        assert error["type"] == "error" and {"type", "message"} <= set(error["error"]), error
    else:
        assert {"message", "type", "param", "code"} <= set(error["error"]), error


# -- strategies: anything JSON, and bodies close enough to valid to get past the first check -----------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
texts = st.text(max_size=30) | st.sampled_from(["\ud800", "a\ud83d", "\x00", "data:image/png;base64,AAAA"])
models = st.sampled_from(["sonnet", "claude-opus-4", "gpt-5", ""]) | json_values
anything = json_values


def some(*options: Any) -> st.SearchStrategy[Any]:
    return st.one_of(*options, anything)


chat_parts = st.fixed_dictionaries(
    {"type": some(st.sampled_from(["text", "image_url", "refusal", "input_audio"]))},
    optional={"text": some(texts), "image_url": some(st.fixed_dictionaries({"url": some(texts)})), "refusal": texts},
)
tool_calls = st.lists(st.fixed_dictionaries(
    {"id": some(texts), "type": some(st.just("function")),
     "function": some(st.fixed_dictionaries({"name": some(texts), "arguments": some(texts)}))}),
    max_size=2)  # fmt: skip
chat_messages = st.fixed_dictionaries(
    {"role": some(st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "critic"]))},
    optional={"content": some(texts, st.lists(chat_parts, max_size=3)), "tool_calls": some(tool_calls),
              "tool_call_id": some(texts), "name": some(texts)},
)  # fmt: skip
function_tools = st.fixed_dictionaries(
    {"type": some(st.sampled_from(["function", "custom", "web_search", "file_search"]))},
    optional={"function": some(st.fixed_dictionaries({"name": some(texts), "parameters": anything})),
              "name": some(texts), "parameters": anything, "input_schema": anything},
)  # fmt: skip
formats = st.fixed_dictionaries(
    {"type": some(st.sampled_from(["text", "json_object", "json_schema", "xml"]))},
    optional={"json_schema": some(st.fixed_dictionaries({"name": texts, "schema": anything})), "schema": anything},
)
tool_choices = some(st.sampled_from(["auto", "none", "required", "any"]), st.fixed_dictionaries(
    {"type": some(st.sampled_from(["function", "tool", "custom", "auto"]))},
    optional={"function": anything, "name": some(texts)}))  # fmt: skip
chat_bodies = st.fixed_dictionaries(
    {"model": models, "messages": some(st.lists(chat_messages, min_size=1, max_size=4))},
    optional={"stream": some(st.booleans()), "tools": some(st.lists(function_tools, max_size=2)),
              "tool_choice": tool_choices, "response_format": some(formats), "n": anything, "logprobs": anything,
              "reasoning_effort": some(st.sampled_from(["low", "high", "enormous"])), "user": some(texts),
              "metadata": anything, "stream_options": anything},
)  # fmt: skip
response_items = st.fixed_dictionaries(
    {"type": some(st.sampled_from(["message", "function_call", "function_call_output", "custom_tool_call",
                                   "custom_tool_call_output", "reasoning", "item_reference"]))},
    optional={"role": some(st.sampled_from(["user", "assistant", "developer", "system"])),
              "content": some(texts, st.lists(st.fixed_dictionaries(
                  {"type": some(st.sampled_from(["input_text", "output_text", "input_image", "input_file"]))},
                  optional={"text": some(texts), "image_url": some(texts)}), max_size=2)),
              "call_id": some(texts), "name": some(texts), "arguments": some(texts), "output": some(texts),
              "input": some(texts)},
)  # fmt: skip
responses_bodies = st.fixed_dictionaries(
    {"model": models, "input": some(texts, st.lists(response_items, max_size=4))},
    optional={"instructions": some(texts), "stream": some(st.booleans()),
              "tools": some(st.lists(function_tools, max_size=2)), "tool_choice": tool_choices,
              "previous_response_id": some(texts), "store": some(st.booleans()),
              "text": some(st.fixed_dictionaries({"format": some(formats)})), "reasoning": anything,
              "background": anything, "conversation": anything},
)  # fmt: skip
anthropic_blocks = st.fixed_dictionaries(
    {"type": some(st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "document"]))},
    optional={"text": some(texts), "id": some(texts), "name": some(texts), "input": anything,
              "tool_use_id": some(texts), "content": some(texts, st.lists(anything, max_size=2)),
              "source": some(st.fixed_dictionaries({"type": some(st.sampled_from(["base64", "url"])),
                                                    "media_type": some(texts), "data": some(texts)}))},
)  # fmt: skip
messages_bodies = st.fixed_dictionaries(
    {"model": models, "messages": some(st.lists(st.fixed_dictionaries(
        {"role": some(st.sampled_from(["user", "assistant", "system"])),
         "content": some(texts, st.lists(anthropic_blocks, max_size=3))}), min_size=1, max_size=4))},
    optional={"max_tokens": anything, "system": some(texts, st.lists(anthropic_blocks, max_size=2)),
              "stream": some(st.booleans()), "tools": some(st.lists(st.fixed_dictionaries(
                  {"name": some(texts)}, optional={"input_schema": anything, "type": some(texts)}), max_size=2)),
              "tool_choice": tool_choices, "thinking": anything, "output_format": anything},
)  # fmt: skip

FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                HealthCheck.too_slow], derandomize=True)  # fmt: skip


def encode(body: Any) -> bytes:
    return json.dumps(body).encode("utf-8", "surrogatepass")  # (lone surrogates travel as \\ud800 escapes)


BODIES = {
    "/v1/chat/completions": chat_bodies,
    "/v1/responses": responses_bodies,
    "/v1/messages": messages_bodies,
    "/v1/messages/count_tokens": messages_bodies,
}


@pytest.mark.parametrize("path", list(BODIES))
@FUZZ
@given(data=st.data())
def test_no_body_gets_a_500(served: str, path: str, data: st.DataObject) -> None:
    """Bodies close to the route's schema, and any JSON at all."""
    body = data.draw(st.one_of(BODIES[path], anything))
    check(path, *post(f"{served}{path}", encode(body)))
