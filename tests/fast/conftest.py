"""The fast lane: no node, no Claude Code CLI, no mock API.

The engine runs on `tests/replay_cli.py` (recorded stream-json replayed turn by turn), and
the faces run on `tests/fast/fake_engine.py` (the engine's public API, scripted).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core import Settings

REPLAY_CLI = Path(__file__).resolve().parents[1] / "replay_cli.py"

Turns = list[str | list[dict[str, Any]]]


@pytest.fixture
def replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings whose CLI replays `turns` (fixture names or lists of stream-json objects), in order."""
    monkeypatch.setenv("HOME", str(tmp_path))

    def build(turns: Turns, **overrides: object) -> Settings:
        script = tmp_path / "replay.json"
        script.write_text(json.dumps({"turns": turns}))
        monkeypatch.setenv("REPLAY_SCRIPT", str(script))
        binary = tmp_path / "claude"
        binary.write_text(
            f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(REPLAY_CLI)!r}, run_name='__main__')\n"
        )
        binary.chmod(0o755)
        values: dict[str, object] = {
            "claude_bin": str(binary), "state_dir": tmp_path / "state", "proxy_port": 0,
            "activity_timeout": 30, "kill_grace": 2, "warm_spares": 0,
        }  # fmt: skip
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[arg-type]

    return build
