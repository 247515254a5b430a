"""A mock of the Anthropic Messages API, good enough for the real Claude Code CLI.

The reply is chosen by directives in the newest user text of the request:

- default: ``MOCK reply to: <text>``, streamed a few characters per delta
- ``USE_TOOL``: a Bash ``echo hi`` tool call first, then ``Tool said: <output>``
- ``SLEEP_TOOL``: a Bash tool call that sleeps 300 s in python3 (to test killing tool children)
- ``SLOW_TOOL``: a Bash tool call that takes 2 s, then prints ``hi``
- ``ENV_TOOL``: a Bash ``env``: the agent's environment, as a client that has it run commands reads it
- ``ESCAPE_TOOL``: a Bash command that starts ``sleep 321`` in a session of its own, and returns at once
- ``TOUCH_TOOL``: a Bash ``touch mock_created.txt`` (one that needs approval outside bypassPermissions)
- ``STRUCTURED {json}``: when the CLI offers its ``StructuredOutput`` tool (``--json-schema``), a call of it
  with that object (else the default answer, which the CLI then asks to be structured)
- ``ASK_QUESTION``: Claude's ``AskUserQuestion`` ("Which color should the button be?", Red or Blue)
- ``PLAN_EXIT``: in plan mode, a Markdown plan written to the plan file, then ``ExitPlanMode``
- ``ERR429`` / ``ERR500`` / ``ERR401`` / ``ERR400`` / ``ERR529``: that HTTP error
- ``HANG``: accept the request and never answer
- ``STALL``: start the stream, send one delta, then never finish
- ``SLOW``: 50 ms between deltas
- ``LONG<n>``: exactly n text deltas
- ``THINK``: a thinking block before the text
- ``MAXTOK``: stop with ``max_tokens``
- ``CALL_CLIENT <name> {json}`` (repeatable): calls of the offered MCP tools named ``mcp__*__<name>``
- ``REROUTED``: the answer comes from ``REROUTED_MODEL``, whatever was asked for
- ``LIMITS<n>[/<m>][@<s>]``: the subscription's windows in the response headers (five-hour n %, seven-day m %;
  the five-hour one resetting in s seconds); at 100 % the API refuses the call with a 429, as the real one does
- ``MDSTREAM``: a short Markdown answer (heading, bold, a code block), to stream with SLOW
- ``MARKDOWN``: a 20,000-character Markdown answer with headings, code blocks and broken markup

Every request body is kept in ``requests`` so tests can check what the CLI sent.
Usage figures are fixed per response so tests can check the proxy's arithmetic.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

INPUT_TOKENS = 11
CACHE_READ_TOKENS = 7
CACHE_WRITE_TOKENS = 5
MODEL_ANSWERING = "claude-mock-5"
REROUTED_MODEL = "claude-haiku-9-9"
ASK_INPUT = {  # valid for the CLI's AskUserQuestion schema
    "questions": [
        {
            "question": "Which color should the button be?",
            "header": "Color",
            "options": [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}],
            "multiSelect": False,
        }
    ]
}
PLAN = "# The plan\n\n1. Read `main.py`\n2. **Fix** the bug"


def _text_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts = []
    for block in content or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
    return texts


def _authored(text: str) -> bool:
    """Not Claude Code's system reminders, nor the context OpenClaw appends to every request (a model reads
    it, but answers the user)."""
    return not text.startswith("<system-reminder>") and "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>" not in text


def newest_user_text(body: dict[str, Any]) -> str:
    """The newest user-authored text (without the `[user]` label the proxy gives each of several messages)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        texts = [t.removeprefix("[user]\n") for t in _text_of(message.get("content")) if _authored(t)]
        if texts:
            return texts[-1]
    return ""


def tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_mock_{uuid.uuid4().hex[:16]}", "name": name, "input": tool_input}


def plan_exit_step(body: dict[str, Any]) -> dict[str, Any] | None:
    """What Claude does in plan mode: write the plan to the file the CLI names, then call ExitPlanMode
    (whose input is empty: the CLI reads the plan from that file); None once both are done."""
    called = [
        block.get("name")
        for message in body.get("messages", [])
        if message.get("role") == "assistant" and isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_use"
    ]
    if "Write" not in called:
        where = re.search(r"create your plan at (\S+) using the Write tool", json.dumps(body))
        path = where.group(1) if where else "plan.md"
        return tool_use("Write", {"file_path": path, "content": PLAN})
    return None if "ExitPlanMode" in called else tool_use("ExitPlanMode", {})


def last_tool_result(body: dict[str, Any]) -> str | None:
    messages = [m for m in body.get("messages", []) if m.get("role") != "system"]  # the CLI's notes after a result
    if not messages or messages[-1].get("role") != "user":
        return None
    content = messages[-1].get("content")
    if not isinstance(content, list):
        return None
    if any(t and not t.startswith("<system-reminder>") for t in _text_of(content)):
        return None  # a new user message joined to an interrupted tool's result: answer the message
    for block in content:
        if block.get("type") == "tool_result":
            inner = block.get("content")
            if isinstance(inner, list):
                return " ".join(_text_of(inner))
            return str(inner)
    return None


def client_tool_calls(text: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """`CALL_CLIENT name {json}` (repeatable): tool_use blocks for the offered tools ending in `__name`."""
    offered = [tool.get("name", "") for tool in body.get("tools", [])]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": "Let me use your tool."}]
    for match in re.finditer(r"CALL_CLIENT (\S+) (\{[^}]*\})", text):
        name = next((o for o in offered if o.endswith("__" + match.group(1))), "missing__" + match.group(1))
        blocks.append({"type": "tool_use", "id": f"toolu_mock_{uuid.uuid4().hex[:16]}", "name": name,
                       "input": json.loads(match.group(2))})  # fmt: skip
    return blocks


def structured(text: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """`STRUCTURED {json}`: the object to give the CLI's StructuredOutput tool, when it is offered."""
    if not any(tool.get("name") == "StructuredOutput" for tool in body.get("tools", [])):
        return None
    start = text.find("{", text.find("STRUCTURED"))
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


RESETS_5H_IN = 2 * 3600 + 10 * 60  # seconds from now the mock's five-hour window resets in
RESETS_7D_IN = 3 * 86400


def limit_headers(text: str) -> dict[str, str]:
    """`LIMITS<five-hour %>[/<seven-day %>]`: the subscription's windows as the API reports them (the CLI turns
    them into a rate_limit_event on a subscription credential)."""
    found = re.search(r"LIMITS(\d+)(?:/(\d+))?(?:@(\d+))?", text)
    if not found:
        return {}
    five, seven = int(found.group(1)) / 100, int(found.group(2) or 40) / 100
    now = int(time.time())
    resets_5h, resets_7d = now + int(found.group(3) or RESETS_5H_IN), now + RESETS_7D_IN

    def status(utilization: float) -> str:
        return "rejected" if utilization >= 1 else "allowed_warning" if utilization >= 0.8 else "allowed"

    prefix = "anthropic-ratelimit-unified"
    return {
        f"{prefix}-status": "rejected" if max(five, seven) >= 1 else "allowed",
        f"{prefix}-reset": str(resets_5h), f"{prefix}-representative-claim": "five_hour",
        f"{prefix}-5h-utilization": str(five), f"{prefix}-5h-reset": str(resets_5h),
        f"{prefix}-5h-status": status(five),
        f"{prefix}-7d-utilization": str(seven), f"{prefix}-7d-reset": str(resets_7d),
        f"{prefix}-7d-status": status(seven), f"{prefix}-fallback": "available",
    }  # fmt: skip


STREAMED_MARKDOWN = (
    "## The plan\n\nFirst **read the file**, then change `main()` as follows:\n\n```python\n"
    + "".join(f"def step_{i}():\n    return {i}  # one step of the plan\n" for i in range(6))
    + "```\n\nThat is **all**."
)


def long_markdown() -> str:
    """About 20,000 characters of Markdown: sections of prose and code, and markup left open at the end."""
    parts = []
    for section in range(14):
        parts.append(f"## Section {section}\n\n" + f"Some **bold** and `code` text in section {section}. " * 12)
        code = "\n".join(f"    value_{section}_{i} = compute({i})  # line {i}" for i in range(25))
        parts.append(f"```python\ndef section_{section}():\n{code}\n```")
    parts.append("- [ ] an open task\n- [x] a finished task")
    parts.append("Tags to show as written: <div> and Vec<T>, and a block:\n\n<details>\nsummary\n</details>")
    parts.append("And an *unclosed emphasis, a [broken link( and a stray ` backtick")
    return "\n\n".join(parts)


@dataclass
class MockAnthropic:
    requests: list[dict[str, Any]] = field(default_factory=list)
    answered: int = 0
    hanging: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    retry_after: int = 1  # seconds, in the retry-after header of a 429
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def user_texts(self, request_index: int = -1) -> list[str]:
        """All user-authored texts the API saw in one request, oldest first."""
        body = self.requests[request_index]
        out = []
        for message in body.get("messages", []):
            if message.get("role") == "user":
                out += [t for t in _text_of(message.get("content")) if not t.startswith("<system-reminder>")]
        return out

    def dialogue(self, request_index: int = -1) -> list[tuple[str, str]]:
        """(role, text) of every user and assistant message the API saw in one request."""
        out = []
        for message in self.requests[request_index].get("messages", []):
            if message.get("role") not in ("user", "assistant"):
                continue
            texts = [t for t in _text_of(message.get("content")) if not t.startswith("<system-reminder>")]
            if texts:
                out.append((message["role"], "\n".join(texts)))
        return out

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_route("*", "/{tail:.*}", self._other)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _other(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"type": "error", "error": {"type": "not_found_error", "message": "mock: no such route"}}, status=404
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        text = newest_user_text(body)
        tool_output = last_tool_result(body)
        if "REROUTED" in text:  # answered by another model than asked for, as when a fallback model steps in
            body = {**body, "model": REROUTED_MODEL}

        error = re.search(r"ERR(\d{3})", text)
        if error and tool_output is None:
            status = int(error.group(1))
            kind = {
                400: "invalid_request_error",
                401: "authentication_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }.get(status, "api_error")
            headers = {"retry-after": str(self.retry_after)} if status == 429 else {}
            return web.json_response(
                {"type": "error", "error": {"type": kind, "message": f"mock {status} {kind}"}},
                status=status,
                headers=headers,
            )
        limits = limit_headers(text)
        if limits.get("anthropic-ratelimit-unified-status") == "rejected" and tool_output is None:
            # The plan's limit is hit: the API refuses the call, as a 429 carrying the windows and when they reset.
            return web.json_response(
                {"type": "error", "error": {"type": "rate_limit_error", "message": "mock: usage limit reached"}},
                status=429,
                headers={**limits, "retry-after": str(self.retry_after)},
            )
        if "HANG" in text and tool_output is None:
            self.hanging += 1
            await asyncio.sleep(3600)

        blocks: list[dict[str, Any]] = []
        stop_reason = "end_turn"
        plan_step = plan_exit_step(body) if "PLAN_EXIT" in text else None
        if plan_step is not None:
            blocks.append(plan_step)
            stop_reason = "tool_use"
        elif tool_output is not None:
            blocks.append({"type": "text", "text": f"Tool said: {tool_output.strip()}"})
        elif "STRUCTURED" in text and structured(text, body) is not None:
            blocks.append(tool_use("StructuredOutput", structured(text, body) or {}))
            stop_reason = "tool_use"
        elif "ASK_QUESTION" in text:
            blocks.append(tool_use("AskUserQuestion", ASK_INPUT))
            stop_reason = "tool_use"
        elif "CALL_CLIENT" in text:
            blocks += client_tool_calls(text, body)
            stop_reason = "tool_use"
        elif any(
            word in text for word in ("USE_TOOL", "SLEEP_TOOL", "SLOW_TOOL", "TOUCH_TOOL", "ENV_TOOL", "ESCAPE_TOOL")
        ):
            command = "echo hi"
            if "ENV_TOOL" in text:
                command = "env"
            elif "ESCAPE_TOOL" in text:  # a command that leaves the CLI's process group and session
                command = "setsid sleep 321 > /dev/null 2>&1 < /dev/null & echo started"
            elif "TOUCH_TOOL" in text:
                command = "touch mock_created.txt"
            elif "SLEEP_TOOL" in text:
                command = 'python3 -c "import time; time.sleep(300)"'
            elif "SLOW_TOOL" in text:
                command = "python3 -c \"import time; time.sleep(2); print('hi')\""
            blocks.append({"type": "text", "text": "I will run a command."})
            blocks.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_mock_{uuid.uuid4().hex[:16]}",
                    "name": "Bash",
                    "input": {"command": command, "description": "Run a command"},
                }
            )
            stop_reason = "tool_use"
        else:
            if "THINK" in text:
                blocks.append(
                    {
                        "type": "thinking",
                        "thinking": "Let me think about this mock.",
                        "signature": "sig_mock_" + "A" * 40,
                    }
                )
            long = re.search(r"LONG(\d+)", text)
            if "MARKDOWN" in text:
                blocks.append({"type": "text", "text": long_markdown()})
            elif "MDSTREAM" in text:
                blocks.append({"type": "text", "text": STREAMED_MARKDOWN})
            elif long:
                blocks.append({"type": "text", "text": "".join(f"w{i} " for i in range(int(long.group(1))))})
            else:
                blocks.append({"type": "text", "text": f"MOCK reply to: {text[-300:]}"})
            if "MAXTOK" in text:
                stop_reason = "max_tokens"

        message_id = f"msg_mock_{uuid.uuid4().hex[:20]}"
        if not body.get("stream"):
            self.answered += 1
            return web.json_response(self._message(message_id, body, blocks, stop_reason), headers=limit_headers(text))
        return await self._stream(request, message_id, body, blocks, stop_reason, text)

    def _usage(self, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": INPUT_TOKENS,
            "cache_creation_input_tokens": CACHE_WRITE_TOKENS,
            "cache_read_input_tokens": CACHE_READ_TOKENS,
            "output_tokens": output_tokens,
        }

    def _message(
        self, message_id: str, body: dict[str, Any], blocks: list[dict[str, Any]], stop_reason: str
    ) -> dict[str, Any]:
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": body.get("model", MODEL_ANSWERING),
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self._usage(3),
        }

    async def _stream(
        self,
        request: web.Request,
        message_id: str,
        body: dict[str, Any],
        blocks: list[dict[str, Any]],
        stop_reason: str,
        text: str,
    ) -> web.StreamResponse:
        headers = {"content-type": "text/event-stream", "request-id": "req_mock", **limit_headers(text)}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        slow = "SLOW" in text
        stall = "STALL" in text and last_tool_result(body) is None

        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        start_message = self._message(message_id, body, [], None)  # type: ignore[arg-type]
        start_message["usage"] = self._usage(1)
        await send("message_start", {"type": "message_start", "message": start_message})
        deltas = 0
        for index, block in enumerate(blocks):
            kind = block["type"]
            if kind == "text":
                await send(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
                pieces = (
                    re.findall(r"w\d+ ", block["text"])
                    if re.search(r"LONG\d+", text)
                    else [block["text"][i : i + 5] for i in range(0, len(block["text"]), 5)]
                )
                for piece in pieces:
                    await send(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
                    )
                    deltas += 1
                    if stall:
                        self.hanging += 1
                        await asyncio.sleep(3600)
                    if slow:
                        await asyncio.sleep(0.05)
            elif kind == "thinking":
                await send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                )
                await send(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                    },
                )
                await send(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": block["signature"]},
                    },
                )
            elif kind == "tool_use":
                await send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                    },
                )
                raw = json.dumps(block["input"])
                for i in range(0, len(raw), 12):
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": raw[i : i + 12]},
                        },
                    )
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": max(deltas, 1)},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        self.answered += 1
        return response


async def _main(port: int) -> None:
    mock = MockAnthropic(port=port)
    await mock.start()
    print(f"mock Anthropic API on {mock.base_url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import sys

    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
