"""Anthropic's Messages API request, as far as the proxy reads it, and its translation into the
chat-completion request every dialect is served as (`proxy.dialogue`).

Lenient where clients differ (unknown fields are kept and ignored: `stop_sequences`,
`temperature`, `top_k`, `metadata`, ...), strict where a mistake would change the meaning
(roles, block types, server tools that are not the client's to run).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field

from proxy.bodies import chat_request
from proxy.errors import bad_request
from proxy.schema import (
    AssistantMessage,
    ChatCompletionRequest,
    FunctionCall,
    ImagePart,
    ImageURL,
    JSONSchemaFormat,
    Lenient,
    Message,
    ResponseFormat,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    UserMessage,
)


class TextBlock(Lenient):
    type: Literal["text"]
    text: str


class Base64Source(Lenient):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(Lenient):
    type: Literal["url"]
    url: str


class ImageBlock(Lenient):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


class ToolUseBlock(Lenient):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(Lenient):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: bool = False


class ThinkingBlock(Lenient):
    type: Literal["thinking"]
    thinking: str = ""
    signature: str = ""


class RedactedThinkingBlock(Lenient):
    type: Literal["redacted_thinking"]
    data: str = ""


Block = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class AnthropicMessage(Lenient):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class AnthropicTool(Lenient):
    name: str
    type: str | None = None  # absent or "custom" for the client's own tools; server tools have dated types
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ThinkingConfig(Lenient):
    type: str
    budget_tokens: int | None = None


class MessagesRequest(Lenient):
    model: str
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int | None = None  # accepted: the CLI decides the output length
    system: str | list[TextBlock] | None = None
    stream: bool = False
    tools: list[AnthropicTool] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: ThinkingConfig | None = None
    output_format: dict[str, Any] | None = None  # Anthropic's structured outputs: {"type": "json_schema", "schema"}

    @property
    def shows_thinking(self) -> bool:
        return self.thinking is not None and self.thinking.type != "disabled"


def _image(block: ImageBlock) -> ImagePart:
    source = block.source
    url = source.url if isinstance(source, URLSource) else f"data:{source.media_type};base64,{source.data}"
    return ImagePart(type="image_url", image_url=ImageURL(url=url))  # checked (and URLs refused) by the planner


def _result_text(block: ToolResultBlock, where: str) -> str:
    if isinstance(block.content, str):
        return block.content
    if any(isinstance(part, ImageBlock) for part in block.content):
        raise bad_request("images in tool results are not supported; send them in a user message", param=where)
    return "\n".join(part.text for part in block.content if isinstance(part, TextBlock))


def _user(message: AnthropicMessage, where: str) -> list[Message]:
    if isinstance(message.content, str):
        return [UserMessage(role="user", content=message.content)]
    results: list[Message] = []
    parts: list[TextPart | ImagePart] = []
    for index, block in enumerate(message.content):
        if isinstance(block, ToolResultBlock):
            text = _result_text(block, f"{where}.content.{index}")
            results.append(ToolMessage(role="tool", content=text, tool_call_id=block.tool_use_id,
                                       is_error=block.is_error))  # fmt: skip
        elif isinstance(block, TextBlock):
            parts.append(TextPart(type="text", text=block.text))
        elif isinstance(block, ImageBlock):
            parts.append(_image(block))
        else:
            raise bad_request(f"a user message cannot hold a {block.type} block", param=f"{where}.content.{index}")
    # Tool results answer the assistant message before them; what the user adds comes after.
    return results + ([UserMessage(role="user", content=list(parts))] if parts else [])


def _assistant(message: AnthropicMessage) -> Message:
    if isinstance(message.content, str):
        return AssistantMessage(role="assistant", content=message.content)
    # The text blocks joined as they were sent (the transcript compares them with what was sent); thinking
    # is Claude's own and not part of the history.
    text = "".join(block.text for block in message.content if isinstance(block, TextBlock))
    calls = [
        ToolCall(id=b.id, function=FunctionCall(name=b.name, arguments=json.dumps(b.input)))
        for b in message.content
        if isinstance(b, ToolUseBlock)
    ]
    return AssistantMessage(role="assistant", content=text, tool_calls=calls or None)


def _tools(tools: list[AnthropicTool] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    offered = []
    for index, tool in enumerate(tools):
        if tool.type not in (None, "custom"):
            raise bad_request(
                f"tool {tool.name!r} is of type {tool.type!r}: Anthropic's server tools do not run here "
                "(Claude Code has its own); only the client's own tools (no type, or custom) are offered",
                param=f"tools.{index}.type",
            )
        function = {"name": tool.name, "description": tool.description or "", "parameters": tool.input_schema}
        offered.append({"type": "function", "function": function})
    return offered


def _tool_choice(choice: dict[str, Any] | None) -> Any:
    kind = (choice or {}).get("type", "auto")
    if not isinstance(kind, str):
        raise bad_request("tool_choice.type must be a string", param="tool_choice")
    if kind == "tool":
        return {"type": "function", "function": {"name": (choice or {}).get("name")}}
    translated = {"auto": "auto", "any": "required", "none": "none"}.get(kind)
    if translated is None:
        raise bad_request(f"unknown tool_choice.type {kind!r}; expected auto, any, tool or none", param="tool_choice")
    return translated


def _answer_format(output_format: dict[str, Any] | None) -> ResponseFormat | None:
    if output_format is None:
        return None
    kind = output_format.get("type")
    if kind is None:
        return None
    # Checked where every dialect's format is (proxy.dialogue), under this dialect's name for the field.
    return ResponseFormat(type=kind if isinstance(kind, str) else repr(kind),
                          json_schema=JSONSchemaFormat(schema=output_format.get("schema")))  # fmt: skip


def to_chat(body: MessagesRequest) -> ChatCompletionRequest:
    """The request as chat completion messages: the same conversations, tools and continuity."""
    messages: list[Message] = []
    system = body.system if isinstance(body.system, str) else "\n\n".join(b.text for b in body.system or [])
    if system.strip():
        messages.append(SystemMessage(role="system", content=system))
    for index, message in enumerate(body.messages):
        if message.role == "user":
            messages += _user(message, f"messages.{index}")
        else:
            messages.append(_assistant(message))
    return chat_request(
        "messages",
        model=body.model,
        messages=messages,
        stream=body.stream,
        tools=_tools(body.tools),
        tool_choice=_tool_choice(body.tool_choice) if body.tools else None,
        response_format=_answer_format(body.output_format),
    )
