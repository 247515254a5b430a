"""Markdown answers as Telegram messages: text plus entities, at most 4096 characters each.

Sending entities instead of a parse mode cannot fail to parse. Long answers are split
between paragraphs, never inside a code block unless the block alone is too long.

telegramify-markdown does the converting, with two changes: an open task (`- [ ]`) is an
empty box (its default looks ticked), and HTML in an answer is text to show (Claude writes
`<div>` or `Vec<T>` to talk about them; the converter would drop them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from telegram import MessageEntity
from telegramify_markdown.config import RenderConfig
from telegramify_markdown.converter import STANDARD_OPTIONS, EventWalker, _parse
from telegramify_markdown.entity import MessageEntity as ConvertedEntity
from telegramify_markdown.entity import split_entities, utf16_len

MAX_MESSAGE = 4096
_FENCE = re.compile(r"^\s*(```|~~~)")

_CONFIG = RenderConfig.isolated()
_CONFIG.markdown_symbol.task_completed = "\N{BALLOT BOX WITH CHECK}"  # ☑
_CONFIG.markdown_symbol.task_uncompleted = "\N{BALLOT BOX}"  # ☐


def _html_as_text(event: Any) -> Any:
    """The parser's event with HTML (inline, or a block of it) turned into text and paragraphs."""
    kind, span = event if isinstance(event, tuple) else (event, None)
    if not isinstance(kind, dict):  # (a soft break, a rule)
        return event
    if "InlineHtml" in kind:
        kind = {"Text": kind["InlineHtml"]}
    elif "Html" in kind:
        kind = {"Text": kind["Html"]}
    elif kind.get("Start") == "HtmlBlock":
        kind = {"Start": "Paragraph"}
    elif kind.get("End") == "HtmlBlock":
        kind = {"End": "Paragraph"}
    return (kind, span) if span is not None else kind


def to_entities(markdown: str) -> tuple[str, list[ConvertedEntity]]:
    """Markdown as Telegram text and entities: `telegramify_markdown.convert`, taken apart to turn HTML into
    text between its parser and its walker (`_parse` is its own; the version is pinned below 2)."""
    source, events = _parse(markdown, STANDARD_OPTIONS, latex_escape=True)
    text, entities, _ = EventWalker(_CONFIG, source).walk(tuple(_html_as_text(e) for e in events))
    return text, entities


@dataclass(frozen=True)
class Chunk:
    text: str
    entities: tuple[MessageEntity, ...] = ()


def _blocks(markdown: str) -> list[str]:
    """Paragraphs, with each fenced code block kept whole."""
    blocks: list[str] = []
    current: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and match and match.group(1) == fence:
            fence = None
        elif fence is None and not line.strip():
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def _word_breaks(text: str, limit: int) -> str:
    """The text with a line break for each space where a piece of at most `limit` UTF-16 units must end
    and no line break would do (the splitter cuts only at line breaks, else mid-word). A space at the end
    of a message is not seen, so the text reads the same; a single word over the limit is still cut."""
    chars = list(text)
    start = 0
    while utf16_len(text[start:]) > limit:
        end, used = start, 0
        while end < len(text) and used + utf16_len(text[end]) <= limit:
            used += utf16_len(text[end])
            end += 1
        window = text[start:end]
        newline = window.rfind("\n")
        space = window.rfind(" ")
        if newline > 0 and newline >= space - limit // 4:  # a line break near the end: the splitter takes it
            start += newline + 1
        elif space > 0:
            chars[start + space] = "\n"
            start += space + 1
        else:
            start = end  # one word longer than a message
    return "".join(chars)


def _convert(markdown: str) -> tuple[str, list[ConvertedEntity]]:
    text, entities = to_entities(markdown)
    stripped = text.rstrip()
    end = utf16_len(stripped)
    kept = []
    for entity in entities:  # Telegram trims trailing whitespace; entities must stay inside the text
        length = min(entity.offset + entity.length, end) - entity.offset
        if length > 0:
            entity.length = length
            kept.append(entity)
    return stripped, kept


def _chunk(text: str, entities: list[ConvertedEntity]) -> Chunk:
    return Chunk(
        text,
        tuple(
            MessageEntity(type=e.type, offset=e.offset, length=e.length, url=e.url, language=e.language)
            for e in entities
        ),
    )


def render(markdown: str, limit: int = MAX_MESSAGE) -> list[Chunk]:
    """The messages to send for one answer, in order."""
    chunks: list[Chunk] = []
    group = ""
    for block in _blocks(markdown):
        candidate = f"{group}\n\n{block}" if group else block
        text, entities = _convert(candidate)
        if utf16_len(text) <= limit:
            group = candidate
            continue
        if group:
            chunks.append(_chunk(*_convert(group)))
        text, entities = _convert(block)
        if utf16_len(text) <= limit:
            group = block
            continue
        # One block (a long code block or paragraph) over the limit: split it between lines, or words.
        pieces = split_entities(_word_breaks(text, limit), entities, limit)
        chunks += [_chunk(piece, piece_entities) for piece, piece_entities in pieces[:-1]]
        group = ""
        if pieces:
            last_text, last_entities = pieces[-1]
            chunks.append(_chunk(last_text.rstrip(), last_entities))
    if group:
        text, entities = _convert(group)
        if text:
            chunks.append(_chunk(text, entities))
    return [c for c in chunks if c.text.strip()]


def draft(markdown: str, limit: int = MAX_MESSAGE) -> Chunk:
    """The end of an answer still being written, as one message: its last whole paragraphs (an open code
    block counts as one to the end; bold or code being written is closed), rendered like the answer. Only
    the tail is converted: drafts are sent every second while Claude writes."""
    blocks = _blocks(markdown)
    if blocks and not _FENCE.match(blocks[-1]):  # mid-paragraph: close what is being written, as it will be
        if blocks[-1].count("`") % 2:
            blocks[-1] += "`"
        if blocks[-1].count("**") % 2:
            blocks[-1] += "**"
    tail: list[str] = []
    size = 0
    for block in reversed(blocks):
        if tail and size + len(block) > limit:
            break
        tail.insert(0, block)
        size += len(block) + 2
    chunks = render("\n\n".join(tail), limit)
    return chunks[-1] if chunks else Chunk("")


LOG_LINES = 40  # tool calls listed in a turn's footer; the rest are counted


def with_footer(chunks: list[Chunk], summary: str, tool_log: list[str], limit: int = MAX_MESSAGE) -> list[Chunk]:
    """The turn's messages with its summary line at the end, and below it the tools it ran as a collapsed
    quote (tap to open): the turn reads top to bottom in one bubble. The footer goes in a message of its
    own when the last one has no room for it."""
    lines = tool_log[:LOG_LINES]
    if len(tool_log) > LOG_LINES:
        lines.append(f"… and {len(tool_log) - LOG_LINES} more")
    log_text = "\n".join(lines)
    while log_text and utf16_len(summary) + utf16_len(log_text) + 1 > limit // 2:
        log_text = log_text[: len(log_text) // 2].rpartition("\n")[0] + "\n…"  # very long descriptions
    footer = Chunk(summary + (f"\n{log_text}" if log_text else ""))
    if log_text:
        quote = MessageEntity(
            type=MessageEntity.EXPANDABLE_BLOCKQUOTE, offset=utf16_len(summary) + 1, length=utf16_len(log_text)
        )
        footer = Chunk(footer.text, (quote,))
    return appended(chunks, footer, limit)


def appended(chunks: list[Chunk], last: Chunk, limit: int = MAX_MESSAGE) -> list[Chunk]:
    """The messages with `last` at the end: in the last message, after a blank line, when there is room."""
    if not chunks or utf16_len(chunks[-1].text) + 2 + utf16_len(last.text) > limit:
        return [*chunks, last]
    return [*chunks[:-1], joined(chunks[-1], last)]


def utf16_head(text: str, limit: int) -> str:
    """The start of a text, at most `limit` UTF-16 units (Telegram's measure: an emoji counts two); a
    pair cut in half is dropped."""
    return text.encode("utf-16-le")[: 2 * limit].decode("utf-16-le", errors="ignore")


def joined(first: Chunk, second: Chunk, between: str = "\n\n") -> Chunk:
    """One message of two, the second's entities moved along."""
    shift = utf16_len(first.text) + utf16_len(between)
    moved = tuple(
        MessageEntity(type=e.type, offset=e.offset + shift, length=e.length, url=e.url, language=e.language)
        for e in second.entities
    )
    return Chunk(f"{first.text}{between}{second.text}", first.entities + moved)
