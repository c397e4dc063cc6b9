"""The package's layout rules: no import cycle, short files, public framework APIs only, no reference to files users
do not have."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_advkd"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Package modules ``path`` imports when it is loaded (module level, outside ``if TYPE_CHECKING``)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_advkd"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lightning_advkd"))
    return found & known


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target] if target in path else [*path, node, target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle() -> None:
    known = {module_name(path) for path in SOURCES}
    graph = {module_name(path): imported_modules(path, known) - {module_name(path)} for path in SOURCES}
    assert len(graph) > 50, "the package's modules were not found"
    assert find_cycle(graph) is None


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_file_is_longer_than_the_limit(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"split {path.name} by concept"


def test_only_public_framework_apis_and_safe_loading() -> None:
    private = re.compile(r"_ddp_kwargs|_logger_connector|_forward_hooks|weights_only=False")
    hits = [f"{p.relative_to(PACKAGE)}:{n}" for p in SOURCES for n, line in enumerate(p.read_text().splitlines(), 1)
            if private.search(line)]  # fmt: skip
    assert hits == []


def test_product_files_cite_no_file_users_do_not_have() -> None:
    product = [*SOURCES, *PACKAGE.rglob("*.yaml"), *PACKAGE.rglob("*.md"), PACKAGE.parent / "README.md"]
    hits = [str(p) for p in product if re.search(r"METHOD\.md|MACHINE\.md|STYLE\.md", p.read_text())]
    assert hits == []
