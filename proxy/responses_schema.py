"""OpenAI's Responses API request, as far as the proxy reads it, and its translation into the
chat-completion request every dialect is served as (`proxy.dialogue`).

Items map onto chat messages: `message` items by role (system and developer are system text),
`function_call` / `custom_tool_call` items onto the assistant message before them,
`*_output` items onto tool messages, `reasoning` items are dropped (they are Claude's own,
given back). Custom tools become functions with one string argument, `input`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

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
    RefusalPart,
    ResponseFormat,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    UserMessage,
)

CUSTOM_INPUT = "input"  # the one argument a custom (free-form) tool is offered with
# Built-in tools that would change the answer's meaning if silently dropped (Claude Code has none of them
# for a client); `web_search` is dropped, as Claude Code searches with its own tools.
_REFUSED_TOOLS = {"file_search", "code_interpreter", "computer_use_preview", "computer_use", "image_generation",
                  "mcp", "local_shell", "shell", "apply_patch"}  # fmt: skip
_IGNORED_TOOLS = {"web_search", "web_search_preview", "namespace"}


class TextFormat(Lenient):
    type: str = "text"
    name: str | None = None
    schema_: Any = Field(default=None, alias="schema")
    strict: bool | None = None


class TextOptions(Lenient):
    format: TextFormat | None = None


class ReasoningOptions(Lenient):
    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(Lenient):
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    text: TextOptions | None = None
    reasoning: ReasoningOptions | None = None
    metadata: dict[str, Any] | None = None
    background: bool | None = None
    conversation: Any = None
    top_logprobs: int | None = None


@dataclass
class Translated:
    """The request as chat completion messages, and what the writer needs to answer in kind."""

    chat: ChatCompletionRequest
    custom_tools: frozenset[str] = frozenset()  # names of the free-form tools: their calls carry `input`
    items: list[dict[str, Any]] = field(default_factory=list)  # this request's input items, as given


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content parts", param=where)
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text"):
            texts.append(str(part.get("text") or ""))
        elif kind == "refusal":
            texts.append(str(part.get("refusal") or ""))
        else:
            raise bad_request(f"unknown content part type {kind!r} here", param=f"{where}.{index}.type")
    return "".join(texts)


def _user_parts(content: Any, where: str) -> str | list[TextPart | ImagePart | RefusalPart]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content parts", param=where)
    parts: list[TextPart | ImagePart | RefusalPart] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "text"):
            parts.append(TextPart(type="text", text=str(part.get("text") or "")))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise bad_request("an input_image needs an image_url (file ids are not supported)",
                                  param=f"{where}.{index}.image_url")  # fmt: skip
            parts.append(ImagePart(type="image_url", image_url=ImageURL(url=url)))
        else:
            raise bad_request(f"unknown content part type {kind!r}; expected input_text or input_image",
                              param=f"{where}.{index}.type")  # fmt: skip
    return parts


def _output(item: dict[str, Any], where: str) -> str:
    output = item.get("output")
    if isinstance(output, list):
        return _text_of(output, f"{where}.output")
    if not isinstance(output, str):
        raise bad_request(f"{where}.output must be a string", param=f"{where}.output")
    return output


def _call(item: dict[str, Any], where: str, custom: bool) -> ToolCall:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise bad_request(f"{where} needs a call_id and a name", param=where)
    arguments: Any = json.dumps({CUSTOM_INPUT: str(item.get("input") or "")}) if custom else item.get("arguments")
    if not isinstance(arguments, str):
        raise bad_request(f"{where}.arguments must be a JSON string", param=f"{where}.arguments")
    return ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))


def to_messages(items: list[dict[str, Any]]) -> list[Message]:
    """Input items as chat messages (system text first where it was)."""
    messages: list[Message] = []
    for index, item in enumerate(items):
        where = f"input.{index}"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role, content = item.get("role"), item.get("content")
            if role in ("system", "developer"):
                messages.append(SystemMessage(role="system", content=_text_of(content, f"{where}.content")))
            elif role == "user":
                messages.append(UserMessage(role="user", content=_user_parts(content, f"{where}.content")))
            elif role == "assistant":
                text = _text_of(content, f"{where}.content")
                previous = messages[-1] if messages else None
                if isinstance(previous, AssistantMessage) and not previous.tool_calls:
                    previous.content = f"{previous.content or ''}{text}"  # one answer, told in several items
                else:
                    messages.append(AssistantMessage(role="assistant", content=text))
            else:
                raise bad_request(f"unknown role {role!r}; expected user, assistant, system or developer",
                                  param=f"{where}.role")  # fmt: skip
        elif kind in ("function_call", "custom_tool_call"):
            call = _call(item, where, custom=kind == "custom_tool_call")
            previous = messages[-1] if messages else None
            if isinstance(previous, AssistantMessage):
                previous.tool_calls = [*(previous.tool_calls or []), call]
            else:
                messages.append(AssistantMessage(role="assistant", content="", tool_calls=[call]))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where} needs the call_id it answers", param=f"{where}.call_id")
            messages.append(ToolMessage(role="tool", content=_output(item, where), tool_call_id=call_id))
        elif kind == "reasoning":
            continue  # Claude's own reasoning, handed back: not part of what the conversation said
        else:
            raise bad_request(
                f"unknown input item type {kind!r}; expected message, function_call, function_call_output, "
                "custom_tool_call, custom_tool_call_output or reasoning",
                param=f"{where}.type",
            )
    return messages


def _tools(tools: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]] | None, frozenset[str]]:
    if not tools:
        return None, frozenset()
    offered: list[dict[str, Any]] = []
    custom: set[str] = set()
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            raise bad_request("a tool must be an object with a type", param=f"tools.{index}")
        if kind in _IGNORED_TOOLS:
            continue
        if kind in _REFUSED_TOOLS:
            raise bad_request(f"built-in tool {kind!r} is not available here; only function and custom tools are",
                              param=f"tools.{index}.type")  # fmt: skip
        if kind == "function":
            function = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
            offered.append({"type": "function", "function": function})
        elif kind == "custom":
            name = tool.get("name")
            about = str(tool.get("description") or "")
            grammar = (tool.get("format") or {}).get("definition") if isinstance(tool.get("format"), dict) else None
            if grammar:
                about += f"\n\nThe input follows this grammar:\n{grammar}"
            parameters = {"type": "object", "properties": {CUSTOM_INPUT: {"type": "string", "description": about}},
                          "required": [CUSTOM_INPUT]}  # fmt: skip
            offered.append({"type": "function", "function": {"name": name, "description": about,
                                                              "parameters": parameters}})  # fmt: skip
            if isinstance(name, str):
                custom.add(name)
        else:
            raise bad_request(f"unknown tool type {kind!r}; expected function or custom", param=f"tools.{index}.type")
    return offered or None, frozenset(custom)


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom") and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad_request("tool_choice must be auto, none, required, or a function or custom tool by name",
                      param="tool_choice")  # fmt: skip


def _refuse_unsupported(body: ResponsesRequest) -> None:
    if body.background:
        raise bad_request("background responses are not supported: answers stream or come whole", param="background")
    if body.conversation is not None:
        raise bad_request("the Conversations API is not supported; use previous_response_id", param="conversation")
    if body.top_logprobs:
        raise bad_request("top_logprobs are not supported: Claude does not report them", param="top_logprobs")


def translate(body: ResponsesRequest, earlier: list[dict[str, Any]]) -> Translated:
    """The request, after the items of the responses it follows (`earlier`), as chat completion messages."""
    _refuse_unsupported(body)
    items = [{"type": "message", "role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    messages: list[Message] = []
    if body.instructions and body.instructions.strip():
        messages.append(SystemMessage(role="system", content=body.instructions))
    messages += to_messages([*earlier, *items])
    tools, custom = _tools(body.tools)
    answer_format = None
    text_format = body.text.format if body.text else None
    if text_format is not None and text_format.type != "text":
        answer_format = ResponseFormat(type=text_format.type, json_schema=JSONSchemaFormat(schema=text_format.schema_))
    chat = chat_request(
        "input",
        model=body.model,
        messages=messages,
        stream=body.stream,
        tools=tools,
        tool_choice=_tool_choice(body.tool_choice) if tools else None,
        response_format=answer_format,
        reasoning_effort=body.reasoning.effort if body.reasoning else None,
    )
    return Translated(chat, custom, list(items))
