"""Fast checks of the pieces with no process behind them: settings, models, messages, the store."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest

from claude_max.logs import RedactingFilter
from core.config import load_settings
from core.doctor import check_permissions
from core.errors import SettingsError, StoreError, UnknownModel
from core.models import resolve_model
from core.store import SessionStore
from core.transcript import Exchange, Transcript
from proxy.conversation import BadConversation, plan_turn, transcript
from proxy.schema import ChatCompletionRequest

# -- settings ---------------------------------------------------------------------------------


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings(_env_file=None)
    assert settings.proxy_host == "127.0.0.1" and settings.proxy_port == 3456
    assert settings.state_dir == tmp_path / ".local/state/claude-max"
    assert settings.workdir == settings.state_dir / "workspace"
    assert settings.claude_permission_mode == "bypassPermissions"
    assert (settings.activity_timeout, settings.max_concurrent) == (600, 4)


def test_settings_parse_lists_and_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_API_KEYS", "sk-one-0123456789ab, sk-two-0123456789ab")
    monkeypatch.setenv("TELEGRAM_ALLOWED_USERS", "12345,678")
    monkeypatch.setenv("MODEL_ALIASES", "gpt-4o=sonnet, GPT-4o-mini=haiku")
    monkeypatch.setenv("DEBUG", "yes please")
    settings = load_settings(_env_file=None)
    assert [k.get_secret_value() for k in settings.proxy_api_keys] == ["sk-one-0123456789ab", "sk-two-0123456789ab"]
    assert settings.telegram_allowed_users == [12345, 678]
    assert settings.model_aliases == {"gpt-4o": "sonnet", "gpt-4o-mini": "haiku"}
    assert settings.debug_enabled


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PROXY_PORT", "99999"),
        ("PROXY_PORT", "http"),
        ("MAX_CONCURRENT", "0"),
        ("ACTIVITY_TIMEOUT", "-1"),
        ("TELEGRAM_ALLOWED_USERS", "alice"),
        ("CLAUDE_PERMISSION_MODE", "yolo"),
        ("MODEL_ALIASES", "no-equals-sign"),
        ("PROXY_ALLOWED_ORIGINS", "evil.example"),
        ("LIMIT_WARN_AT", "eighty"),
        ("LIMIT_WARN_AT", "0.8,1.5"),
        ("LIMIT_WARN_AT", "100%"),
        ("LIMIT_WARN_AT", "0"),
        ("LIMIT_FALLBACK", "opus"),
        ("LIMIT_FALLBACK", "opus=sonnet"),
        ("LIMIT_FALLBACK", "gpt-4o=sonnet@0.9"),
        ("LIMIT_FALLBACK", "opus=gpt-4o@0.9"),
        ("LIMIT_FALLBACK", "opus=sonnet@2"),
        ("FALLBACK_MODEL", "gpt-4o"),
        ("PROJECTS", "relative/dir"),
        ("PROJECTS", "web=relative"),
    ],
)
def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert f"{variable}:" in str(caught.value)


def test_settings_from_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXY_PORT", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("PROXY_PORT=4000\nCLAUDE_WORKDIR=/tmp/somewhere\n")
    settings = load_settings(_env_file=env_file)
    assert settings.proxy_port == 4000 and settings.workdir == Path("/tmp/somewhere")
    assert load_settings(_env_file=env_file, proxy_port=5000).proxy_port == 5000, "flags override the file"


def test_secret_values_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_NOTIFY_ID", "not-a-number")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:SECRET")
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert "SECRET" not in str(caught.value)


def test_log_lines_never_carry_secrets() -> None:
    import logging

    record = logging.LogRecord(
        "x",
        logging.INFO,
        "",
        0,
        "calling %s with key %s",
        ("https://api.telegram.org/bot123456:ABC-def_ghi/getMe", "sk-secret-key"),
        None,
    )
    RedactingFilter(["sk-secret-key"]).filter(record)
    line = record.getMessage()
    assert "sk-secret-key" not in line and "ABC-def_ghi" not in line
    assert "/bot<redacted>/getMe" in line


def test_no_logged_value_can_forge_a_line() -> None:
    import logging

    forged = "abc\n2026-12-02 level=INFO logger=proxy.app event=request status=200\r\x1b[2J"
    record = logging.LogRecord("x", logging.INFO, "", 0, "request conversation=%s", (forged,), None)
    RedactingFilter([]).filter(record)
    line = record.getMessage()
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert (
        line == "request conversation=abc\\n2026-12-02 level=INFO logger=proxy.app event=request status=200\\r\\x1b[2J"
    )


# -- models -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "cli_model"),
    [
        ("claude-opus-4", "opus"),
        ("claude-sonnet-4", "sonnet"),
        ("claude-haiku-4", "haiku"),
        ("opus", "opus"),
        ("Sonnet", "sonnet"),
        ("opusplan", "opusplan"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5-20251101"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4-20250514"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022"),
        ("maxproxy/claude-opus-4", "opus"),
        ("claude-code-cli/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("", ""),
        (None, ""),
    ],
)
def test_model_resolution(requested: str | None, cli_model: str) -> None:
    assert resolve_model(requested) == cli_model


@pytest.mark.parametrize("requested", ["gpt-4o", "claude", "claude-opus-4; rm -rf /", "--model", "llama3"])
def test_unknown_models_are_refused(requested: str) -> None:
    with pytest.raises(UnknownModel):
        resolve_model(requested)


def test_aliases_and_default() -> None:
    assert resolve_model("gpt-4o", aliases={"gpt-4o": "sonnet"}) == "sonnet"
    assert resolve_model(None, default="haiku") == "haiku"


# -- messages ----------------------------------------------------------------------------------


def request(*messages: dict) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "sonnet", "messages": list(messages)})


def test_plan_splits_history_from_the_new_turn() -> None:
    plan = plan_turn(
        request(
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ),
        scope="s",
    )
    assert [m.role for m in plan.prior] == ["user", "assistant"]
    assert [m.role for m in plan.new] == ["user"]
    assert plan.instructions == "Be terse."
    fresh = plan.prompt_for(None)
    assert fresh[-1] == {"type": "text", "text": "three"}
    assert "<instructions>\nBe terse.\n</instructions>" in fresh[0]["text"]
    assert "[user]\none" in fresh[0]["text"] and "[assistant]\ntwo" in fresh[0]["text"]


def test_fingerprint_ignores_whitespace_and_system_text_but_not_words() -> None:
    a = request({"role": "system", "content": "x"}, {"role": "user", "content": "hello  world"})
    b = request({"role": "user", "content": [{"type": "text", "text": " hello world\n"}]})
    c = request({"role": "user", "content": "hello there"})
    reply = request({"role": "assistant", "content": "ok"}).messages
    held = transcript("s", [*b.messages, *reply])
    assert held.holds(transcript("s", [*(m for m in a.messages if m.role != "system"), *reply]))
    assert not held.holds(transcript("s", [*c.messages, *reply]))
    assert not held.holds(transcript("other-key", [*b.messages, *reply])), "keys never share conversations"
    assert transcript("s", []).key is None


def test_head_after_matches_the_next_requests_history() -> None:
    first = plan_turn(request({"role": "user", "content": "q"}), scope="s")
    following = plan_turn(
        request(
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}
        ),
        scope="s",
    )
    assert first.history is None
    assert first.head_after("a") == following.history


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 20).decode()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.com/cat.png", "not fetched"),
        ("data:image/bmp;base64,Qk0=", "not supported"),
        ("data:image/png;base64,@@@@", "not valid"),
        (f"data:image/jpeg;base64,{PNG}", "not a valid JPEG image"),
        ("data:image/png;base64," + "A" * (8 * 1024 * 1024), "at most 5 MB"),
    ],
)
def test_bad_images_are_refused(url: str, problem: str) -> None:
    with pytest.raises(BadConversation) as caught:
        plan_turn(request({"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}), "s")
    assert problem in str(caught.value)


def test_images_become_image_blocks() -> None:
    plan = plan_turn(
        request(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "see"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ),
        "s",
    )
    blocks = plan.prompt_for(None)
    assert blocks == [
        {"type": "text", "text": "see"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]


# -- the store ----------------------------------------------------------------------------------


async def test_store_records_and_finds(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    await store.open()
    first = Transcript("scope", (Exchange(("u1",), "a1"),))
    second = first.then(["u2"], "a2")
    await store.record("k1", session_id="s1", model="sonnet", workdir="/w", head=first, context=None)
    await store.record("k1", session_id="s2", model="opus", workdir="/w", head=second, context="c")
    found = await store.find_holding(second)
    assert found is not None and (found.key, found.session_id, found.model, found.turns) == ("k1", "s2", "opus", 2)
    assert found.transcript == second
    assert await store.find_holding(first) is None
    await store.close()
    reopened = SessionStore(tmp_path)
    await reopened.open()  # migrations are not applied twice
    assert (await reopened.get("k1")).session_id == "s2"  # type: ignore[union-attr]
    assert await reopened.forget("k1") and await reopened.get("k1") is None
    await reopened.close()


async def test_the_stores_memory_of_a_conversation_is_what_the_database_holds(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    await store.open()
    first = Transcript("scope", (Exchange(("u1",), "a1"),))
    await store.record("k1", session_id="s1", model="sonnet", workdir="/w", head=first, context=None)
    assert (await store.get("k1")).turns == 1  # type: ignore[union-attr]  # read once, then kept
    for n, session in enumerate(("s2", "s3"), start=2):
        await store.record("k1", session_id=session, model="opus", workdir="/w", head=first.then(["u"], session),
                           context="c")  # fmt: skip
        remembered = await store.get("k1")
        assert remembered is not None and (remembered.session_id, remembered.turns) == (session, n)
    # A turn stopped before its answer: the conversation goes on in its session, no answered turn counted.
    await store.record("k1", session_id="s4", model="opus", workdir="/w", head=None, context="c", answered=False)
    remembered = await store.get("k1")
    assert remembered is not None and (remembered.session_id, remembered.turns) == ("s4", 3)
    reader = SessionStore(tmp_path)
    await reader.open()
    assert await reader.get("k1") == remembered, "field for field what a fresh read finds"
    await reader.close()
    assert await store.forget("k1") and await store.get("k1") is None
    await store.close()


async def test_store_refuses_a_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "sessions.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as caught:
        await SessionStore(tmp_path).open()
    assert "sessions.sqlite3" in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


@pytest.mark.parametrize(
    ("value", "enabled"), [("1", True), ("yes", True), ("0", False), ("false", False), ("", False)]
)
def test_debug_values(monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool) -> None:
    monkeypatch.setenv("DEBUG", value)
    assert load_settings(_env_file=None).debug_enabled is enabled


def test_dotted_model_versions() -> None:
    assert resolve_model("claude-sonnet-4.5") == "claude-sonnet-4-5"
    assert resolve_model("claude-3.5-haiku-20241022") == "claude-3-5-haiku-20241022"


def test_env_file_reaches_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CLAUDE_CODE_OAUTH_TOKEN=from-the-file\nIS_SANDBOX=1\nPROXY_PORT=4001\nEMPTY=\n")
    monkeypatch.delenv("CLAUDE_CODE_OAUTH_TOKEN", raising=False)
    monkeypatch.setenv("IS_SANDBOX", "from-the-environment")
    monkeypatch.setenv("CLAUDECODE", "1")
    child = load_settings(_env_file=env_file).child_environment()
    assert child["CLAUDE_CODE_OAUTH_TOKEN"] == "from-the-file"
    assert child["IS_SANDBOX"] == "from-the-environment", "the daemon's environment wins, as for settings"
    assert "CLAUDECODE" not in child and "EMPTY" not in child
    assert child["PATH"] == os.environ["PATH"]


def test_the_daemons_secrets_never_reach_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TELEGRAM_BOT_TOKEN=123:from-the-file\nANTHROPIC_API_KEY=sk-ant-for-the-cli\n")
    monkeypatch.setenv("PROXY_API_KEYS", "sk-key-of-client-a-0123456789,sk-key-of-client-b-0123456789")
    monkeypatch.setenv("proxy_api_keys", "sk-lowercase-spelling-0123456789")  # pydantic-settings reads it too
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    settings = load_settings(_env_file=env_file)
    assert settings.proxy_api_keys and settings.telegram_bot_token is not None, "the daemon has them"
    child = settings.child_environment()
    assert not {"PROXY_API_KEYS", "proxy_api_keys", "TELEGRAM_BOT_TOKEN"} & set(child)
    assert not any("client-a" in value or "from-the-file" in value for value in child.values())
    assert child["ANTHROPIC_API_KEY"] == "sk-ant-for-the-cli", "the CLI's own credentials pass"


def test_env_example_lists_every_setting() -> None:
    import re

    from core.config import Settings

    example = (Path(__file__).parents[2] / ".env.example").read_text()
    listed = {name.lower() for name in re.findall(r"^#?\s*([A-Z_]+)=", example, re.MULTILINE)}
    assert set(Settings.model_fields) <= listed, set(Settings.model_fields) - listed


def test_turn_summary_counts_tools_by_name_and_not_waiting() -> None:
    from bot.progress import Progress
    from bot.summary import summary_line
    from core import ToolActivity
    from core.describe import describe_tool

    progress = Progress(bot=None, chat_id=1, interval=2.5, private=True)  # type: ignore[arg-type]
    progress.waiting_for_slot = True
    assert "waiting for a free Claude Code slot" in progress.render().text
    for name, tool_input in (("Bash", {"command": "ls"}), ("Read", {"file_path": "a: b.py"}), ("Bash", {})):
        progress.tool(ToolActivity(name, describe_tool(name, tool_input)))
    assert "waiting" not in progress.render().text, "a tool started: the turn has its slot"
    summary = summary_line(progress, 0.0123, "✅ Done")
    assert summary.startswith("✅ Done · 0s · 3 tools (Bash×2, Read) · $0.0123 at API prices")
    # A refused call is named as such, not counted as used; a cost that rounds to nothing is not shown.
    refused = (describe_tool("Bash", {"command": "ls"}),)
    summary = summary_line(progress, 0.00001, "✅ Done", refused=refused)
    assert summary == "✅ Done · 0s · 2 tools (Read, Bash) · 🚫 refused: 💻 Bash: ls"


def test_doctor_reads_is_sandbox_as_the_cli_will(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # the CLI refuses bypassPermissions only to root
    monkeypatch.delenv("IS_SANDBOX", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("IS_SANDBOX=1\n")
    assert check_permissions(load_settings(_env_file=env_file)).ok, "IS_SANDBOX=1 in .env reaches the CLI"
    monkeypatch.setenv("IS_SANDBOX", "yes")
    refused = check_permissions(load_settings(_env_file=env_file))
    assert not refused.ok and "'yes' is not 1" in refused.detail, "the CLI accepts only 1"
    asking = check_permissions(load_settings(_env_file=env_file, proxy_permission_mode="ask"))
    assert asking.ok, "as root, a face that asks is not refused"


def test_face_modes_fall_back_to_claude_permission_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAUDE_PERMISSION_MODE", "TELEGRAM_PERMISSION_MODE", "PROXY_PERMISSION_MODE"):
        monkeypatch.delenv(name, raising=False)
    defaults = load_settings(_env_file=None)
    assert (defaults.telegram_permission_mode, defaults.proxy_permission_mode) == ("ask", "bypassPermissions")
    monkeypatch.setenv("CLAUDE_PERMISSION_MODE", "acceptEdits")
    chosen = load_settings(_env_file=None)
    assert (chosen.telegram_permission_mode, chosen.proxy_permission_mode) == ("acceptEdits", "acceptEdits")
    monkeypatch.setenv("TELEGRAM_PERMISSION_MODE", "ask")
    assert load_settings(_env_file=None).telegram_permission_mode == "ask", "a face's own setting wins"
    with pytest.raises(SettingsError, match="PROXY_PERMISSION_MODE"):
        load_settings(_env_file=None, proxy_permission_mode="yolo")


def test_doctor_warns_that_http_prompts_have_nobody_to_ask() -> None:
    from core.doctor import check_approvals

    alone = check_approvals(load_settings(_env_file=None, proxy_permission_mode="ask"))
    assert not alone.ok and not alone.fatal and "TELEGRAM_NOTIFY_ID" in alone.fix
    paired = load_settings(_env_file=None, proxy_permission_mode="ask", telegram_bot_token="1:x", telegram_notify_id=5)
    assert check_approvals(paired).ok


def test_doctor_warns_about_a_readable_env_file_with_secrets(tmp_path: Path) -> None:
    from core.doctor import check_env_file

    env_file = tmp_path / ".env"
    env_file.write_text("PROXY_API_KEYS=sk-key-of-client-a-0123456789\nPROXY_PORT=4001\n")
    env_file.chmod(0o644)
    check = check_env_file(load_settings(_env_file=env_file))
    assert not check.ok and not check.fatal and "PROXY_API_KEYS" in check.detail and "0123" not in check.detail
    assert check.fix == f"chmod 600 {env_file}"
    env_file.chmod(0o600)
    assert check_env_file(load_settings(_env_file=env_file)).ok


def test_a_short_api_key_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_API_KEYS", "x,sk-long-enough-0123456789")
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert "PROXY_API_KEYS" in str(caught.value) and "16 characters" in str(caught.value)
    assert "sk-long" not in str(caught.value), "no key is shown"


def store_modes(folder: Path, name: str) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.name.startswith(name)}


async def test_the_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    from core.store import DB_NAME, SessionStore

    (tmp_path / DB_NAME).touch(mode=0o644)
    (tmp_path / DB_NAME).chmod(0o644)  # as an earlier version left it
    store = SessionStore(tmp_path)
    await store.open()
    await store.set_preferred_model("k", "opus")  # a write: the WAL exists now
    modes = store_modes(tmp_path, DB_NAME)
    await store.close()
    assert modes and set(modes.values()) == {0o600}, modes


async def test_a_turn_behind_its_conversation_waits_a_bounded_time_and_is_counted() -> None:
    import asyncio

    from core.capacity import ConversationLocks
    from core.errors import Saturated

    locks = ConversationLocks()
    async with locks.hold("c1"):
        behind = asyncio.ensure_future(locks.hold("c1", wait=0.2).__aenter__())
        await asyncio.sleep(0.05)
        assert locks.waiting == 1, "counted while it waits"
        with pytest.raises(Saturated) as caught:
            await behind
        assert "previous turn is still running" in caught.value.message and caught.value.retry_after
        assert locks.waiting == 0
        async with locks.hold("c2", wait=0.2):  # another conversation does not wait
            pass
    async with locks.hold("c1", wait=0.2):  # free again
        assert len(locks) == 1
    assert len(locks) == 0


def test_a_burst_of_the_same_error_is_one_line_then_a_count() -> None:
    import logging

    from claude_max.logs import RepeatFilter

    now = [0.0]
    repeats = RepeatFilter(quiet=10, clock=lambda: now[0])

    def record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("asyncio", level, "", 0, msg, ("fd 3",), None)

    passed = [repeats.filter(record("socket.accept() out of system resource %s")) for _ in range(500)]
    assert passed.count(True) == 1, "one line for the burst"
    assert repeats.filter(record("another error %s")), "another event is not held back"
    assert all(repeats.filter(record("request %s", logging.INFO)) for _ in range(3)), "normal events all pass"
    now[0] = 11
    later = record("socket.accept() out of system resource %s")
    assert repeats.filter(later) and later.getMessage().endswith("(and 499 more like it in the last 10 s)")


def test_with_debug_a_secret_split_across_two_lines_is_masked_in_both() -> None:
    import logging

    key = "sk-ant-oat01-0123456789abcdefghijklmnop"
    masking = RedactingFilter([key], fragments=True)
    first = logging.LogRecord(
        "core.engine", logging.DEBUG, "", 0, "cli_event event=%r", (f"TextDelta('{key[:20]}')",), None
    )
    second = logging.LogRecord(
        "core.engine", logging.DEBUG, "", 0, "cli_event event=%r", (f"TextDelta('{key[20:]}')",), None
    )
    for record in (first, second):
        masking.filter(record)
    assert key[:20] not in first.getMessage() and key[20:] not in second.getMessage()
    assert "<redacted>" in first.getMessage() and "<redacted>" in second.getMessage()
    plain = logging.LogRecord("x", logging.INFO, "", 0, "turn outcome=ok model=claude-sonnet", None, None)
    masking.filter(plain)
    assert plain.getMessage() == "turn outcome=ok model=claude-sonnet", "nothing else is touched"


def test_a_window_whose_reset_passed_is_shown_as_reset() -> None:
    from core import LimitWindow, SubscriptionLimits
    from core.events import RateLimit

    limits = SubscriptionLimits()
    five = LimitWindow("five_hour", 0.97, 1000.0, "allowed_warning")
    week = LimitWindow("seven_day", 1.2, 5000.0, "rejected")  # above 1: overage, kept as said
    limits.update(RateLimit("rejected", 5000.0, "seven_day", (five, week)), now=900.0)
    assert limits.status(now=999.0) == "rejected"
    (now_five, _), (now_week, _) = limits.snapshot(now=1001.0)
    assert (now_five.utilization, now_five.status) == (0.0, "allowed") and now_week.utilization == 1.2
    assert limits.status(now=6000.0) == "allowed", "both reset"


def test_the_chat_reads_the_windows_in_words() -> None:
    from bot.limits_text import limit_lines, since, until
    from core import LimitWindow, SubscriptionLimits
    from core.events import RateLimit

    assert (until(7799), until(3 * 86400 + 4 * 3600 - 5), until(30), until(600), until(-5)) == (
        "2 h 10 min", "3 days 4 h", "1 min", "10 min", "a moment",
    )  # fmt: skip
    assert (since(90), since(7799), since(61)) == ("1 min", "2 h 9 min", "1 min"), "a time gone by is not rounded up"
    limits = SubscriptionLimits()
    assert limit_lines(limits) == [], "nothing said when the CLI never reported"
    windows = (
        LimitWindow("five_hour", 0.91, 1000.0 + 7800, "allowed_warning"),
        LimitWindow("seven_day", 0.4, None, ""),
    )
    limits.update(RateLimit("allowed_warning", None, "five_hour", windows), now=1000.0)
    assert limit_lines(limits, now=1000.0) == [
        "Five-hour window: 91% used, resets in 2 h 10 min ⚠️",
        "Seven-day window: 40% used",
    ]


def test_a_file_just_over_the_limit_is_said_to_be_over_it() -> None:
    from bot.uploads import UploadRefused, check_size

    with pytest.raises(UploadRefused, match=r"that file is 1\.000005 MB; the limit is 1 MB"):
        check_size(1024 * 1024 + 5, 1)
    with pytest.raises(UploadRefused, match=r"that file is 60\.0 MB; the limit is 20 MB"):
        check_size(60 * 1024 * 1024, 20)
    check_size(1024 * 1024, 1)


def test_a_split_paste_is_joined_where_the_app_cut_it() -> None:
    from bot.pastes import joined
    from bot.prompt_text import has_words

    hard = "x" * 4096  # cut at the limit: mid-word, nothing was dropped
    assert joined([hard, "yz"]) == hard + "yz"
    assert joined(["a" * 4000 + " ", "next"]) == "a" * 4000 + " next", "the space the part kept"
    assert joined(["a" * 4000, "next line"]) == "a" * 4000 + "\nnext line", "the dropped break stands in"
    assert joined(["only one"]) == "only one"
    assert not has_words("\u200b \u2060\ufeff\n") and has_words("\u200bhi")


async def test_a_paste_is_held_for_its_parts_and_a_shutdown_does_not_lose_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from bot import pastes

    monkeypatch.setattr(pastes, "PASTE_WAIT", 0.05)
    sent: list[str] = []

    async def send(update: object, message: object, text: str) -> None:
        sent.append(text)

    held = pastes.Pastes(send)  # type: ignore[arg-type]
    place = (1, None, 7)
    assert not held.hold(place, None, None, "short"), "a short text is not held"  # type: ignore[arg-type]
    assert held.hold(place, None, None, "x" * 4096)  # type: ignore[arg-type]
    assert held.hold(place, None, None, "rest")  # type: ignore[arg-type]
    assert not held.hold((2, None, 7), None, None, "another chat's"), "parts are joined per place only"  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    assert sent == ["x" * 4096 + "rest"]
    assert held.hold(place, None, None, "y" * 4000)  # type: ignore[arg-type]
    await held.flush()  # the daemon is going away: queued at once, not dropped
    assert sent[-1] == "y" * 4000
    await asyncio.sleep(0.2)
    assert len(sent) == 2, "a flushed paste is not sent twice"
