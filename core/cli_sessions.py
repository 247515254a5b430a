"""The Claude Code sessions of a directory, as the CLI keeps them on disk, for picking one to resume.

The CLI writes each session of a project directory to `$CLAUDE_CONFIG_DIR/projects/<dir>/<id>.jsonl`
(`<dir>` is the directory with each character but letters and digits as `-`): an interactive `claude`
in a terminal writes the same files as the daemon's turns, so a session begun at the desk can be
continued from a phone.

Only what a list needs is read: the newest files by modification time, and of each only its first
READ_BYTES, for the first prompt. The files may be written at this moment (a last line cut short),
be huge, or hold lines of kinds this code does not know; none of that is an error.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

READ_BYTES = 256 * 1024  # of a session file: its first prompt comes within its first few lines
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NOT_PROMPTS = ("<command-", "<local-command", "Caveat:", "<system-reminder>")


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    first_prompt: str
    modified: float  # epoch seconds of the file's last write


def sessions_dir(config_dir: Path, workdir: Path) -> Path:
    return config_dir / "projects" / re.sub(r"[^A-Za-z0-9]", "-", str(workdir))


def config_dir(environment: dict[str, str]) -> Path:
    """Where the CLI keeps its state, in the environment it runs with."""
    if found := environment.get("CLAUDE_CONFIG_DIR"):
        return Path(found).expanduser()
    return Path(environment.get("HOME") or os.path.expanduser("~")) / ".claude"


def recent_sessions(config: Path, workdir: Path, limit: int = 8) -> list[SessionSummary]:
    """The directory's newest sessions that have a prompt, newest first (blocking: run it in a thread)."""
    try:
        files = [(entry.stat().st_mtime, entry) for entry in sessions_dir(config, workdir).glob("*.jsonl")]
    except OSError:
        return []
    found = []
    for modified, path in sorted(files, key=lambda item: item[0], reverse=True):
        if not _ID.match(path.stem):
            continue
        prompt = first_prompt(path)
        if prompt:
            found.append(SessionSummary(path.stem, prompt, modified))
        if len(found) >= limit:
            break
    return found


def first_prompt(path: Path) -> str:
    """The first thing a person typed in a session file, or "" when none is there (yet)."""
    try:
        with path.open("rb") as file:
            head = file.read(READ_BYTES)
    except OSError:
        return ""
    for line in head.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line being written, or cut by the read's bound
        if not isinstance(entry, dict) or entry.get("type") != "user" or entry.get("isMeta"):
            continue
        text = _text(entry.get("message"))
        if text and not text.startswith(_NOT_PROMPTS):
            return " ".join(text.split())
    return ""


def _text(message: object) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):  # the last text block: what came before it is context a face put first
        parts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        texts = [p.strip() for p in parts if isinstance(p, str) and p.strip()]
        return texts[-1] if texts else ""
    return ""
