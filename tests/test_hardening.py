"""What adversarial testing broke, each as the test that would have caught it (the real CLI, the mock API)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Daemon

KEY_A = "sk-key-of-client-a-0123456789"
KEY_B = "sk-key-of-client-b-0123456789"


async def test_a_client_that_runs_env_reads_no_key_of_the_daemon(
    start_daemon: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROXY_API_KEYS", f"{KEY_A},{KEY_B}")
    daemon: Daemon = await start_daemon()  # type: ignore[assignment]
    completion = await daemon.client(api_key=KEY_B).chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "ENV_TOOL please"}]
    )
    said = completion.choices[0].message.content or ""
    assert "Tool said:" in said and "ANTHROPIC_BASE_URL=" in said, "the agent ran env and Claude read it"
    assert KEY_A not in said and KEY_B not in said and "PROXY_API_KEYS" not in said
