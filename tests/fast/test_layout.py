"""The import rules of the layout: one engine (`core`), faces that never import each other, one host."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

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


def _from_core(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `from core... import names` in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "core":
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import) and any(a.name.startswith("core.") for a in node.names):
            found.append(("core.", [a.name for a in node.names]))
    return found


def test_faces_and_the_host_use_only_the_public_api_of_core() -> None:
    import core

    used: set[str] = set()
    for package in ("proxy", "bot", "claude_max"):
        for path in (ROOT / package).glob("*.py"):
            for module, names in _from_core(path):
                assert module == "core", f"{path.relative_to(ROOT)} imports from {module}, not from core"
                used |= set(names)
    assert used <= set(core.__all__), f"used but not in core.__all__: {sorted(used - set(core.__all__))}"


def test_the_public_api_of_core_is_complete() -> None:
    import core

    assert len(set(core.__all__)) == len(core.__all__)
    assert [name for name in core.__all__ if not hasattr(core, name)] == []
    modules = {name for name, value in vars(core).items() if isinstance(value, type(core))}  # core.engine, ...
    offered = {name for name in vars(core) if not name.startswith("_")} - modules
    assert offered == set(core.__all__) - {"__version__"}, "everything core offers is in __all__, and only that"
