"""A paragraph longer than a message is split between words, not inside one."""

from __future__ import annotations

from bot.render import render


def test_a_long_paragraph_is_split_at_whitespace() -> None:
    words = [f"word{i:04d}" for i in range(1200)]  # about 10,800 characters, no line break
    chunks = render(" ".join(words))
    assert len(chunks) == 3
    seen = [w for chunk in chunks for w in chunk.text.split()]
    assert seen == words, "every word whole, in order"
    assert all(len(c.text) <= 4096 for c in chunks)


def test_a_single_word_longer_than_a_message_is_still_cut() -> None:
    chunks = render("x" * 5000)
    assert [len(c.text) for c in chunks] == [4096, 904]


def test_bold_across_the_split_stays_bold_in_both_pieces() -> None:
    chunks = render("**" + " ".join(["bold"] * 1500) + "**")
    assert len(chunks) == 2
    for chunk in chunks:
        assert [(e.type, e.offset) for e in chunk.entities] == [("bold", 0)]
        assert chunk.entities[0].length == len(chunk.text)


def test_task_boxes_and_html_read_as_written() -> None:
    [chunk] = render("- [ ] open\n- [x] done\n\nUse `<b>` or **Vec<T>**; <script>x</script>")
    assert chunk.text == "☐ open\n☑ done\n\nUse <b> or Vec<T>; <script>x</script>"
    assert [(e.type, chunk.text[e.offset : e.offset + e.length]) for e in chunk.entities] == [
        ("code", "<b>"),
        ("bold", "Vec<T>"),
    ]


def test_grep_progress_shows_what_is_searched_for() -> None:
    from core.describe import describe_tool

    assert describe_tool("Grep", {"pattern": "TODO", "path": "src/app"}) == "🔎 Grep: TODO in src/app"
    assert describe_tool("Grep", {"pattern": "def main"}).endswith("Grep: def main")
    assert describe_tool("Read", {"file_path": "/x/y.py"}).endswith("Read: /x/y.py")


def test_a_timeout_before_the_api_answered_says_so() -> None:
    from bot.errors import failure_text
    from bot.progress import Progress
    from core import ActivityTimeout

    progress = Progress(None, 1, 1.0, True)  # type: ignore[arg-type]
    silent = ActivityTimeout("idle", idle_seconds=600, last_activity="started the session")
    assert "the Anthropic API did not answer for 10m 00s" in failure_text(silent, progress)
    progress.tools.append("💻 Bash: make test")
    after_a_tool = failure_text(ActivityTimeout("idle", idle_seconds=600, last_activity="tool result"), progress)
    assert "Claude Code printed nothing for 10m 00s (last: 💻 Bash: make test)" in after_a_tool


def test_a_long_answers_draft_is_its_last_whole_paragraphs() -> None:
    from bot.render import draft
    from tests.mock_anthropic import long_markdown

    markdown = long_markdown()
    shown = draft(markdown)
    assert 2000 < len(shown.text) <= 4096
    assert "a stray" in shown.text[-30:], "it ends where the answer does"
    pre = [shown.text[e.offset : e.offset + e.length] for e in shown.entities if e.type == "pre"]
    assert pre and all(code.startswith("def section_") for code in pre), "no code block is cut at its start"
    half_open = draft(markdown[: markdown.index("value_13_3")])  # the last block's fence is still open
    assert half_open.text.endswith("value_13_2 = compute(2)  # line 2")
    assert half_open.entities[-1].type == "pre"


def test_bold_or_code_being_written_is_shown_as_it_will_be() -> None:
    from bot.render import draft

    shown = draft("Done: that is **al")
    assert shown.text == "Done: that is al" and [e.type for e in shown.entities] == ["bold"]
    shown = draft("call `mai")
    assert shown.text == "call mai" and [e.type for e in shown.entities] == ["code"]


def test_the_footer_goes_in_the_last_part_or_a_message_of_its_own() -> None:
    from bot.render import LOG_LINES, Chunk, with_footer

    short = with_footer([Chunk("All green.")], "✅ Done · 3s · 1 tool (Bash)", ["💻 Bash: make test"])
    assert [c.text for c in short] == ["All green.\n\n✅ Done · 3s · 1 tool (Bash)\n💻 Bash: make test"]
    [quote] = short[0].entities
    assert quote.type == "expandable_blockquote" and short[0].text[quote.offset :] == "💻 Bash: make test"
    full = with_footer([Chunk("x" * 4090)], "✅ Done · 3s", [])
    assert [c.text for c in full] == ["x" * 4090, "✅ Done · 3s"], "no room in the last part: a message of its own"
    many = with_footer([Chunk("ok")], "✅ Done · 9s", [f"💻 Bash: step {i}" for i in range(100)])
    lines = many[0].text.split("\n")
    assert len(lines) == 3 + LOG_LINES + 1 and lines[-1] == f"… and {100 - LOG_LINES} more"
    assert all(len(c.text) <= 4096 for c in many)
