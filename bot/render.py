"""Markdown answers as Telegram messages: text plus entities, at most 4096 characters each.

Sending entities instead of a parse mode cannot fail to parse. Long answers are split
between paragraphs, never inside a code block unless the block alone is too long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import telegramify_markdown
from telegram import MessageEntity
from telegramify_markdown.entity import MessageEntity as ConvertedEntity
from telegramify_markdown.entity import split_entities, utf16_len

MAX_MESSAGE = 4096
_FENCE = re.compile(r"^\s*(```|~~~)")


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
    text, entities = telegramify_markdown.convert(markdown)
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
