"""From an OpenAI message list to a Claude Code turn.

Clients resend the whole history every time. The proxy splits it into what the
conversation already holds (everything up to the last assistant message) and the new
turn (what follows), turns the former into a `Transcript` (see `core.transcript`) to find
the CLI session that holds that history, and sends only the new turn into it. When no
session holds it, the new session gets the prior turns written out in its first prompt.

Client system text never goes to `--system-prompt`: it travels inside the user turn in
an `<instructions>` block, and is sent again only when it changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from core import (
    BadImage,
    ClientTool,
    ClientToolCall,
    Conversation,
    Exchange,
    Transcript,
    digest,
    image_block,
    mcp_names,
)
from proxy.schema import (
    AssistantMessage,
    ChatCompletionRequest,
    FunctionCall,
    FunctionMessage,
    ImagePart,
    Message,
    RefusalPart,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    UserMessage,
)

_DATA_URL = re.compile(r"^data:([\w/+.-]+);base64,(.*)$", re.DOTALL)
_MAX_KEY_LENGTH = 256


class BadConversation(ValueError):
    """The messages cannot form a turn; the message says why, `param` says where."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class PlannedTurn:
    """Everything the engine needs for one chat completion request."""

    instructions: str
    prior: list[Message]
    new: list[Message]
    history: Transcript | None  # what `prior` said, None when there is none
    context: str | None  # fingerprint of `instructions`
    scope: str
    tools: tuple[ClientTool, ...] = ()
    tool_instruction: str = ""  # what tool_choice asks for, said in words: the CLI has no such switch

    @property
    def sent(self) -> Transcript:
        """The transcript of `prior` (empty when there is none)."""
        return self.history or Transcript(self.scope, ())

    @functools.cached_property
    def said(self) -> tuple[str, ...]:
        """Digests of the new messages, as a transcript records them."""
        return tuple(message_digest(m) for m in self.new)

    @property
    def tool_results(self) -> dict[str, tuple[str, bool]]:
        """The new turn's `tool` messages: call id -> (result text, is_error)."""
        return {m.tool_call_id: (_text(m.content), m.is_error) for m in self.new if isinstance(m, ToolMessage)}

    def prompt_for(self, resuming: Conversation | None) -> list[dict[str, Any]]:
        """The user turn for the CLI: only the new messages when resuming, the history too when not."""
        texts: list[str] = []
        if self.instructions and (resuming is None or resuming.context != self.context):
            texts.append(f"<instructions>\n{self.instructions}\n</instructions>")
        if resuming is None and self.prior:
            history = "\n\n".join(render_message(m) for m in self.prior)
            texts.append(
                "Earlier turns of this conversation, for context:\n"
                f"<conversation_history>\n{history}\n</conversation_history>"
            )
        blocks: list[dict[str, Any]] = []
        if texts:
            blocks.append({"type": "text", "text": "\n\n".join(texts)})
        blocks += new_turn_blocks(self.new)
        if self.tool_instruction:
            blocks.append({"type": "text", "text": self.tool_instruction})
        return blocks

    def head_after(self, answer: str, calls: Sequence[ClientToolCall] = ()) -> Transcript:
        """The transcript once this turn's answer (and tool calls) is part of it."""
        tool_calls = [
            ToolCall(id=c.call_id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in calls
        ] or None
        reply = AssistantMessage(role="assistant", content=answer, tool_calls=tool_calls)
        return self.sent.then(self.said, message_digest(reply))

    def results_for(self, calls: Sequence[ClientToolCall]) -> dict[str, tuple[str, bool]]:
        """The new turn's tool results by the ids of `calls`, which the client may have normalised.

        Clients rewrite ids (OpenClaw keeps only `[A-Za-z0-9]`): an id matches a call exactly, or else
        by its normalised form when that names exactly one call. Raises `BadConversation` for results
        of calls that were never issued and for ids that fit several calls.
        """
        exact = {call.call_id for call in calls}
        by_normal: dict[str, list[str]] = {}
        for call in calls:
            by_normal.setdefault(normal_id(call.call_id), []).append(call.call_id)
        matched: dict[str, tuple[str, bool]] = {}
        unknown: list[str] = []
        for client_id, result in self.tool_results.items():
            candidates = [client_id] if client_id in exact else by_normal.get(normal_id(client_id), [])
            if len(candidates) > 1:
                raise BadConversation(
                    f"tool_call_id {client_id!r} fits several of the calls issued ({sorted(candidates)}); "
                    "send the ids as they were issued",
                    "messages",
                )
            if not candidates or candidates[0] in matched:
                unknown.append(client_id)
            else:
                matched[candidates[0]] = result
        if unknown:
            raise BadConversation(f"tool results for calls that were never issued: {sorted(unknown)}", "messages")
        return matched


def plan_turn(request: ChatCompletionRequest, scope: str) -> PlannedTurn:
    instructions: list[str] = []
    dialogue: list[Message] = []
    for message in request.messages:
        if isinstance(message, SystemMessage):
            text = _text(message.content)
            if text.strip():
                instructions.append(text.strip())
        else:
            dialogue.append(message)
    last_assistant = max((i for i, m in enumerate(dialogue) if isinstance(m, AssistantMessage)), default=-1)
    prior, new = dialogue[: last_assistant + 1], dialogue[last_assistant + 1 :]
    if not new:
        raise BadConversation(
            "the last message must be from the user (or a tool result), not the assistant", "messages"
        )
    for message in new:
        if isinstance(message, UserMessage) and not isinstance(message.content, str):
            for part in message.content:
                if isinstance(part, ImagePart):
                    _image_block(part)  # validate now, before anything is spawned
    _check_tool_results(dialogue)
    tools = client_tools(request)
    joined = "\n\n".join(instructions)
    return PlannedTurn(
        instructions=joined,
        prior=prior,
        new=new,
        history=transcript(scope, prior) if prior else None,
        context=_digest(joined) if joined else None,
        scope=scope,
        tools=tools,
        tool_instruction=_tool_instruction(request.tool_choice, tools),
    )


def _check_tool_results(dialogue: list[Message]) -> None:
    """Every `tool` message must answer a call an assistant message made."""
    issued: set[str] = set()
    for index, message in enumerate(dialogue):
        if isinstance(message, AssistantMessage):
            issued |= {call.id for call in message.tool_calls or []}
        elif isinstance(message, ToolMessage) and message.tool_call_id not in issued:
            raise BadConversation(
                f"a tool message answers tool_call_id {message.tool_call_id!r}, which no assistant message issued",
                f"messages.{index}.tool_call_id",
            )


def client_tools(request: ChatCompletionRequest) -> tuple[ClientTool, ...]:
    """The request's function tools, checked and named for MCP; none when tool_choice is "none"."""
    if not request.tools or request.tool_choice == "none":
        return ()
    from jsonschema import Draft202012Validator  # loaded with the first tools, not at start
    from jsonschema.exceptions import SchemaError

    names: list[str] = []
    specs: list[tuple[str, dict[str, Any]]] = []
    for index, tool in enumerate(request.tools):
        where = f"tools.{index}"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise BadConversation("only tools of type function are supported", where)
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadConversation("a tool needs a function name", f"{where}.function.name")
        if name in names:
            raise BadConversation(f"two tools are named {name!r}; tool names must be unique", f"{where}.function.name")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(schema, dict):
            raise BadConversation(f"the parameters of tool {name!r} are not a JSON Schema object", where)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise BadConversation(
                f"the parameters of tool {name!r} are not valid JSON Schema: {exc.message}", where
            ) from None
        if schema.get("type", "object") != "object":
            raise BadConversation(f"the parameters of tool {name!r} must be a JSON Schema of type object", where)
        names.append(name)
        specs.append((str(function.get("description") or ""), {"type": "object", **schema}))
    return tuple(
        ClientTool(name, mcp_name, description, schema)
        for name, mcp_name, (description, schema) in zip(names, mcp_names(names), specs, strict=True)
    )


def _tool_instruction(choice: Any, tools: tuple[ClientTool, ...]) -> str:
    if not tools:
        return ""
    if choice == "required":
        return "(Answer this by calling one of the application's tools, the ones of the `client` MCP server.)"
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        tool = next((t for t in tools if t.name == name), None)
        if tool is None:
            raise BadConversation(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
        return f"(Answer this by calling the application's tool `{tool.mcp_name}` of the `client` MCP server.)"
    return ""


def conversation_key(request: ChatCompletionRequest, header: str | None, scope: str) -> str | None:
    """An explicit conversation id from the `X-Conversation-Id` header, `metadata.conversation_id` or `user`."""
    explicit = header or (request.metadata or {}).get("conversation_id") or request.user
    if explicit is None:
        return None
    if not isinstance(explicit, str) or not explicit.strip() or len(explicit) > _MAX_KEY_LENGTH:
        raise BadConversation(f"a conversation id must be a non-empty string of at most {_MAX_KEY_LENGTH} characters")
    if not explicit.isprintable() or re.search("[\ud800-\udfff]", explicit):
        # (a header's bytes that are not UTF-8 arrive as lone surrogates)
        raise BadConversation("a conversation id must be printable UTF-8 text")
    return f"http:{scope}:{explicit.strip()}"


# -- fingerprints -------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _normal(text: str) -> str:
    return " ".join(text.split())


def normal_id(call_id: str) -> str:
    """A tool-call id as clients that rewrite ids leave it: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", call_id)


def _arguments(arguments: str) -> object:
    """Tool-call arguments as parsed JSON, so re-serialised arguments compare equal."""
    try:
        return json.loads(arguments)
    except ValueError:
        return _normal(arguments)


def message_digest(message: Message) -> str:
    """What a message said, tolerant of what clients change when they resend it: whitespace, the shape
    of content parts, the spelling of tool-call arguments, tool-call ids (results are paired by order)."""
    entry: list[object] = [message.role, _normal(_text(message.content, images="digest"))]
    if isinstance(message, AssistantMessage):
        entry.append([[c.function.name, _arguments(c.function.arguments)] for c in message.tool_calls or []])
    elif isinstance(message, FunctionMessage):
        entry.append(message.name)
    return digest(entry)


def _exchanges(messages: Sequence[Message]) -> Iterator[tuple[list[str], str]]:
    said: list[str] = []
    for message in messages:
        if isinstance(message, AssistantMessage):
            yield said, message_digest(message)
            said = []
        else:
            said.append(message_digest(message))


def transcript(scope: str, messages: Sequence[Message]) -> Transcript:
    """The transcript of a history up to its last assistant message (system messages excluded)."""
    return Transcript(scope, tuple(Exchange(tuple(said), reply) for said, reply in _exchanges(messages)))


# -- rendering ------------------------------------------------------------------------


def _text(content: Any, images: str = "placeholder") -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for part in content:
        if isinstance(part, TextPart):
            pieces.append(part.text)
        elif isinstance(part, RefusalPart):
            pieces.append(part.refusal)
        elif isinstance(part, ImagePart):
            url = part.image_url.url
            pieces.append(f"[image {_digest(url)[:16]}]" if images == "digest" else "[image]")
    return "\n".join(pieces)


def render_message(message: Message) -> str:
    """One message of the history as text the model reads."""
    if isinstance(message, AssistantMessage):
        body = _text(message.content) or (message.refusal or "")
        for call in message.tool_calls or []:
            body += f"\n[called tool {call.function.name} (id {call.id}) with arguments {call.function.arguments}]"
        return f"[assistant]\n{body.strip()}"
    if isinstance(message, ToolMessage):
        return f"[tool result for call {message.tool_call_id}]\n{_text(message.content)}"
    if isinstance(message, FunctionMessage):
        return f"[function {message.name} result]\n{message.content or ''}"
    return f"[user]\n{_text(message.content)}"


def new_turn_blocks(new: list[Message]) -> list[dict[str, Any]]:
    """Content blocks for the new turn: its text, and its images as image blocks."""
    if len(new) == 1 and isinstance(new[0], UserMessage):
        content = new[0].content
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        blocks = []
        for part in content:
            if isinstance(part, ImagePart):
                blocks.append(_image_block(part))
            else:
                blocks.append({"type": "text", "text": _text([part])})
        return blocks
    blocks = []
    for message in new:
        if isinstance(message, UserMessage) and not isinstance(message.content, str):
            texts = [p for p in message.content if not isinstance(p, ImagePart)]
            blocks.append({"type": "text", "text": f"[user]\n{_text(texts)}"})
            blocks += [_image_block(p) for p in message.content if isinstance(p, ImagePart)]
        else:
            blocks.append({"type": "text", "text": render_message(message)})
    return blocks


def _image_block(part: ImagePart) -> dict[str, Any]:
    url = part.image_url.url
    match = _DATA_URL.match(url)
    if not match:
        if url.startswith(("http://", "https://")):
            raise BadConversation("image URLs are not fetched by this proxy; send the image as a data: URL", "messages")
        raise BadConversation("an image_url must be a data: URL with base64 content", "messages")
    try:
        return image_block(match.group(1), match.group(2))
    except BadImage as exc:
        raise BadConversation(str(exc), "messages") from None
