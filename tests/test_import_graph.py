"""pact_zoo's import graph, read from the source with ``ast`` (nothing is imported): no cycle between modules, and the
halting core imports nothing else from pact_zoo (remote-code checkpoints copy its files flat, next to the model)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pact_zoo"


def _modules() -> dict[str, Path]:
    """Module name -> file, for every file inside a package (folders with ``__init__.py``; shipped remote-code copies
    in data folders are no modules of pact_zoo)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if not all((PACKAGE.parent.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts))):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The pact_zoo modules ``name`` imports, at module level or inside functions (a lazy import is a dependency too;
    not under TYPE_CHECKING). An import whose module is not pact_zoo's (another library, or the remote-code fallback
    ``from .config import ...`` of the Hugging Face models) is skipped."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names if alias.name in modules]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source not in modules:  # another library, or the remote-code fallback
                continue
            # ``from package import module`` imports the module; ``from module import name`` the module itself
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (its modules in order, the first repeated at the end), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_the_graph_reads_the_package():
    graph = _graph()
    assert "pact_zoo.halting.stage" in graph and "pact_zoo.acm.module" in graph
    assert "pact_zoo.halting.stage" in graph["pact_zoo.acm.module"] or \
        "pact_zoo.halting.adaptive_module" in graph["pact_zoo.acm.module"]
    assert not any(name.startswith("pact_zoo.adapters.") for name in graph)  # shipped copies are data
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    cycle = _cycle(_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_halting_core_imports_nothing_else_from_pact_zoo():
    graph = _graph()
    upward = {name: sorted(t for t in targets if not t.startswith("pact_zoo.halting"))
              for name, targets in graph.items() if name.startswith("pact_zoo.halting")}
    upward = {name: targets for name, targets in upward.items() if targets}
    assert not upward, f"pact_zoo.halting must stay self-contained (flat remote-code copies): {upward}"


def test_halting_core_uses_single_dot_imports_only():
    """Remote code copies the core files flat: ``from .x import y`` resolves there, ``from ..x`` or
    ``from pact_zoo.halting.x`` would not."""
    bad = []
    for path in sorted((PACKAGE / "halting").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level > 1 or (node.module or "").startswith("pact_zoo")):
                bad.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Import) and any(a.name.startswith("pact_zoo") for a in node.names):
                bad.append(f"{path.name}:{node.lineno}")
    assert not bad, f"imports that break the flat copy: {bad}"
