"""What a user's message becomes as the text of Claude's prompt: its words, after what they reply to
(or quote) and whom they were forwarded from, so that Claude reads the context the user sees."""

from __future__ import annotations

from telegram import Message, MessageOriginChannel, MessageOriginChat, MessageOriginHiddenUser, MessageOriginUser

from bot.summary import without_summary

QUOTED_CHARS = 1000  # of a message replied to, passed along with the reply
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))  # zero-width characters


def has_words(text: str) -> bool:
    """Whether a message has something to read (not only spaces and zero-width characters)."""
    return bool(text.translate(INVISIBLE).strip())


def origin_of(message: Message) -> str:
    """Who a forwarded message is from, as the chat shows it ("" when it was not forwarded)."""
    origin = message.forward_origin
    if isinstance(origin, MessageOriginUser):
        return origin.sender_user.full_name
    if isinstance(origin, MessageOriginHiddenUser):
        return origin.sender_user_name
    if isinstance(origin, (MessageOriginChat, MessageOriginChannel)):
        chat = origin.sender_chat if isinstance(origin, MessageOriginChat) else origin.chat
        return chat.title or chat.username or "a chat"
    return ""


def with_quote(message: Message, text: str) -> str:
    """The text, after what it replies to (the part quoted, or the whole message) and whom it was
    forwarded from: Claude reads the context the user pointed at, as the user sees it."""
    replied = message.reply_to_message
    quoted = (message.quote.text if message.quote else "") or (replied and (replied.text or replied.caption)) or ""
    ours = bool(replied and replied.from_user and replied.from_user.is_bot)
    if ours and not message.quote:
        quoted = without_summary(quoted)  # the answer, not the turn's summary below it
    if origin := origin_of(message):  # (Claude should not take someone else's words for the user's)
        text = f"[Forwarded from {origin}]\n\n{text}"
    if not quoted.strip():
        return text
    if len(quoted) > QUOTED_CHARS:
        quoted = quoted[: QUOTED_CHARS - 1] + "…"
    whose = "your earlier answer" if ours else "an earlier message"
    return f"[Replying to {whose}: “{quoted}”]\n\n{text}"
