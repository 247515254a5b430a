"""Projects by name and the CLI's session files, read as far as they go."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core import ProjectError, Projects
from core.cli_sessions import READ_BYTES, first_prompt, recent_sessions, sessions_dir

ID = "3f2a9c1e-0000-4000-8000-{:012d}"


def test_a_root_offers_its_subdirectories_and_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "web").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "notes.txt").write_text("x")
    (tmp_path / "secret").mkdir()
    (root / "out").symlink_to(tmp_path / "secret")
    (root / "inner").symlink_to(root / "web")  # a link that stays inside is fine
    (root / "Api").mkdir()
    projects = Projects.parse(str(root))
    assert projects.names() == ["Api", "inner", "web"], "in the order a person reads them, whatever the case"
    assert projects.named("api") == "Api" and projects.named("WEB") == "web" and projects.named("nope") == "nope"
    assert projects.path("web") == root / "web"
    for name in ("out", ".git", "..", "../secret", "web/..", "notes.txt", "", "x" * 49):
        with pytest.raises(ProjectError):
            projects.path(name)


def test_pairs_are_the_only_names(tmp_path: Path) -> None:
    projects = Projects.parse(f"web={tmp_path}, api = {tmp_path / 'api'}")
    assert projects.names() == ["web", "api"] and projects.path("web") == tmp_path
    with pytest.raises(ProjectError, match="is gone"):
        projects.path("api")
    with pytest.raises(ProjectError, match="no project"):
        projects.path("tmp")


@pytest.mark.parametrize("value", ["relative/dir", "web=relative", "a/b=/x", "web=/x,web=/y", "=/x", "web="])
def test_bad_projects_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        Projects.parse(value)


def line(kind: str, content: object, **more: object) -> str:
    return json.dumps({"type": kind, "message": {"role": kind, "content": content}, **more})


def test_sessions_newest_first_with_their_first_prompt(tmp_path: Path) -> None:
    config, work = tmp_path / "config", tmp_path / "my.project_x"
    where = sessions_dir(config, work)
    assert where.name.endswith("-my-project-x") and "/" not in where.name
    where.mkdir(parents=True)
    lines = [
        '{"type":"queue-operation"}', "not json at all", line("user", "<command-name>/model</command-name>"),
        line("user", "ignored", isMeta=True), line("user", [{"type": "text", "text": "fix the\n login"}]),
        line("user", "later prompt"),
    ]  # fmt: skip
    files = {
        ID.format(1): "\n".join(lines),
        ID.format(2): line("user", "newer"),
        ID.format(3): '{"type":"user","message":{"ro',  # being written: no prompt yet, not listed
        ID.format(4): "\x00\xff",
        "not-a-session-id": line("user", "hello"),
    }
    for index, (name, text) in enumerate(files.items()):
        path = where / f"{name}.jsonl"
        path.write_text(text, errors="surrogateescape")
        os.utime(path, (1000 + index, 1000 + index))
    found = recent_sessions(config, work)
    assert [(s.session_id, s.first_prompt) for s in found] == [(ID.format(2), "newer"), (ID.format(1), "fix the login")]
    assert recent_sessions(config, tmp_path / "elsewhere") == []


def test_a_huge_session_file_is_read_only_at_its_start(tmp_path: Path) -> None:
    path = tmp_path / f"{ID.format(5)}.jsonl"
    with path.open("w") as file:
        file.write(line("attachment", "x" * (READ_BYTES + 10)) + "\n" + line("user", "too far") + "\n")
    assert first_prompt(path) == ""
    path.write_text(line("user", "near") + "\n" + line("attachment", "x" * (8 * READ_BYTES)))
    assert first_prompt(path) == "near"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("not json", "not JSON"),
        ('{"caption": "no path"}', "give `path`"),
        ('{"path": 5}', "give `path`"),
        ('{"path": "a.txt", "caption": ["x"]}', "give `path`"),
        ('{"path": "../outside.txt"}', "outside the project directory"),
        ('{"path": "link.txt"}', "outside the project directory"),
        ('{"path": "sub"}', "there is no file sub"),
    ],
)
def test_send_file_takes_only_files_of_the_project(tmp_path: Path, arguments: str, error: str) -> None:
    from bot.files_back import target

    project = tmp_path / "p"
    (project / "sub").mkdir(parents=True)
    (project / "a.txt").write_text("a")
    (tmp_path / "outside.txt").write_text("x")
    (project / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(ValueError, match=error):
        target(project, arguments)
    # A caption over Telegram's 1024 characters (UTF-16 units: an emoji is two) is cut, and says so.
    assert target(project, '{"path": "a.txt", "caption": "' + "c" * 2000 + '"}') == (
        project / "a.txt",
        "c" * 1023 + "…",
    )
    assert target(project, '{"path": "a.txt", "caption": "' + "😀" * 600 + '"}')[1] == "😀" * 511 + "…"
