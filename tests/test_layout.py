"""The import rules of the layout: one engine (`core`), faces that never import each other, one host."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> top-level modules it must never import
FORBIDDEN = {
    "core": {"proxy", "bot", "claude_max", "aiohttp", "telegram"},
    "proxy": {"bot", "claude_max", "telegram"},
    "bot": {"proxy", "claude_max", "aiohttp"},
}


def imported(path: Path) -> set[str]:
    """Top-level names of everything a module imports, wherever the import statement is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_it_must_not(package: str) -> None:
    modules = sorted((ROOT / package).glob("*.py"))
    assert modules, f"{package}/ has no modules"
    broken = {str(p.relative_to(ROOT)): sorted(imported(p) & FORBIDDEN[package]) for p in modules}
    assert {p: names for p, names in broken.items() if names} == {}


def test_only_the_host_imports_every_face() -> None:
    host = set().union(*(imported(p) for p in (ROOT / "claude_max").glob("*.py")))
    assert {"core", "proxy", "bot"} <= host
