"""The shape of the package: no import cycles, files of readable length, every module explains itself.

The import graph is read from the source (every `import`, including those inside functions), so a cycle
hidden behind a function-level import is found as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nanomolmo2"
LONG_FILE = 400  # lines; a longer file must say at its top why it is not split
LONG_REASON = "Longer than 400 lines because"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that `name` imports, resolved to module names (a package means its __init__)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` imports the submodule; `from module import symbol` the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a symbol path: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_is_read_from_the_source():
    graph = import_graph()
    # a top-level import and a relative one, resolved to modules
    assert "nanomolmo2.models.config" in graph["nanomolmo2.formats.molmo2"]
    assert "nanomolmo2.tokens" in graph["nanomolmo2.models.loss"]
    assert "nanomolmo2.prepare.command" in graph["nanomolmo2.cli"]


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_models_do_not_import_data_training_or_eval():
    """The architecture stands alone: it reads checkpoints (formats) and token ids, nothing of the pipeline."""
    for name, targets in import_graph().items():
        if name.startswith("nanomolmo2.models"):
            outside = {t for t in targets if not t.startswith(("nanomolmo2.models", "nanomolmo2.formats"))}
            assert outside <= {"nanomolmo2.tokens"}, (name, outside)


def test_formats_build_no_modules():
    """Checkpoint formats are dict -> dict conversions: they may read configs, never import model classes."""
    for name, targets in import_graph().items():
        if name.startswith("nanomolmo2.formats"):
            models = {t for t in targets if t.startswith("nanomolmo2.models")}
            assert models <= {"nanomolmo2.models.config"}, (name, models)


def test_every_module_has_a_docstring_and_long_files_say_why():
    for name, path in modules().items():
        source = path.read_text()
        docstring = ast.get_docstring(ast.parse(source))
        if path.name != "__init__.py" or source.strip():
            assert docstring, f"{name} has no docstring saying what it is"
        if source.count("\n") > LONG_FILE:
            assert LONG_REASON in (docstring or ""), f"{name}: over {LONG_FILE} lines without saying why"


def test_models_stay_small():
    lines = sum(p.read_text().count("\n") for p in (PACKAGE / "models").glob("*.py"))
    # 1,300, up from 1,200: FlexAttention for training (flex.py, the attention rule shared with the dense mask)
    assert lines <= 1300, f"models/ has {lines} lines: the architecture should stay readable in one sitting"
