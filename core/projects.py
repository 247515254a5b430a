"""PROJECTS: the directories a chat may work in, by name, and nothing else.

Either `name=path` pairs (`web=~/src/web,api=~/src/api`) or one root whose subdirectories are the
projects (`~/src`: every non-hidden directory under it, as it is when asked). A name is only ever
looked up, never joined into a path: names with `/` or `..` match nothing, and a subdirectory that
is a link leading out of the root is not a project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import ClaudeMaxError


class ProjectError(ClaudeMaxError):
    """A project that is not configured, or whose directory is gone."""


@dataclass(frozen=True)
class Projects:
    pairs: tuple[tuple[str, Path], ...] = ()
    root: Path | None = None

    @classmethod
    def parse(cls, value: str) -> Projects:
        """From the setting's text; ValueError says what is wrong with it."""
        value = value.strip()
        if not value:
            return cls()
        if "=" not in value:
            root = Path(value).expanduser()
            if not root.is_absolute():
                raise ValueError(f"the projects' root must be an absolute path, got {value!r}")
            return cls(root=root)
        pairs = []
        for item in (part.strip() for part in value.split(",") if part.strip()):
            name, sep, path = item.partition("=")
            name, where = name.strip(), Path(path.strip()).expanduser()
            if not sep or not _good_name(name) or not path.strip():
                raise ValueError(
                    f"expected name=path pairs separated by commas, like web=~/src/web; {item!r} is not one"
                )
            if not where.is_absolute():
                raise ValueError(f"project {name!r}: {path.strip()!r} is not an absolute path")
            pairs.append((name, where))
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError("a project name is given twice")
        return cls(pairs=tuple(pairs))

    @property
    def configured(self) -> bool:
        return bool(self.pairs) or self.root is not None

    def names(self) -> list[str]:
        """The projects there are now (a root's subdirectories as they are), sorted."""
        if self.root is None:
            return [name for name, _ in self.pairs]
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return []
        return sorted((e.name for e in entries if _good_name(e.name) and self._inside_root(e)), key=str.casefold)

    def named(self, name: str) -> str:
        """The project a user's spelling names: itself, or the one project it matches ignoring case."""
        names = self.names()
        if name in names:
            return name
        alike = [known for known in names if known.casefold() == name.casefold()]
        return alike[0] if len(alike) == 1 else name

    def path(self, name: str) -> Path:
        """The directory of a project; `ProjectError` for a name that is none, or a directory that is gone."""
        found: Path | None = None
        if self.root is None:
            found = next((path for known, path in self.pairs if known == name), None)
        elif _good_name(name) and self._inside_root(self.root / name):
            found = self.root / name
        if found is None:
            raise ProjectError(f"There is no project {name!r}")
        if not found.is_dir():
            raise ProjectError(f"The directory of project {name!r} ({found}) is gone")
        return found

    def _inside_root(self, path: Path) -> bool:
        assert self.root is not None
        try:
            return path.is_dir() and path.resolve().is_relative_to(self.root.resolve())
        except OSError:
            return False


def _good_name(name: str) -> bool:
    # (at most 48 bytes: a project's button carries its name in Telegram's 64 bytes of callback data)
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name and len(name.encode()) <= 48
